"""What the Dataset tab computes from a ``build-dataset`` output folder (manifest.parquet):
the crop table with its scores, split, source and reject reason; filters by status, split,
source and a metric range; sort; the crop thumbnails (selected crops from images/, rejected
ones cut from their source photo) and a crop shown in its source photo with its box."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from osdhuman.app.draw import draw_boxes
from osdhuman.imageio import read_rgb

ALL = "all"
STATUSES = [ALL, "selected", "rejected"]


class DatasetError(ValueError):
    """The folder is not a build-dataset output (message names it)."""


@dataclass
class Filters:
    status: str = ALL
    split: str = ALL
    source: str = ALL
    metric: str | None = None  # a score column to bound
    low: float | None = None
    high: float | None = None
    sort_by: str = "score"
    descending: bool = True
    limit: int = 60


def load_manifest(folder: str | Path) -> pd.DataFrame:
    p = Path(folder).expanduser() / "manifest.parquet"
    if not p.is_file():
        raise DatasetError(f"{folder}: no manifest.parquet here (point at a `osdhuman build-dataset` output folder)")
    try:
        df = pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any unreadable parquet is one message
        raise DatasetError(f"{p}: unreadable ({type(exc).__name__}: {exc})") from None
    df = df.copy()
    df["dataset_dir"] = str(Path(folder).expanduser())
    df["status"] = np.where(df["selected"].astype(bool), "selected", "rejected")
    return df


def score_columns(df: pd.DataFrame) -> list[str]:
    return ["score"] + [c for c in df.columns if c.startswith("iqa_")] + ["laplacian_var"]


def choices(df: pd.DataFrame, column: str) -> list[str]:
    return [ALL] + sorted(str(v) for v in df[column].dropna().unique())


def filter_crops(df: pd.DataFrame, f: Filters) -> pd.DataFrame:
    out = df
    if f.status != ALL:
        out = out[out["status"] == f.status]
    if f.split != ALL:
        out = out[out["split"].astype(str) == f.split]
    if f.source != ALL:
        out = out[out["source"].astype(str) == f.source]
    if f.metric and f.metric in out.columns:
        if f.low is not None:
            out = out[out[f.metric] >= f.low]
        if f.high is not None:
            out = out[out[f.metric] <= f.high]
    if f.sort_by in out.columns:
        out = out.sort_values(f.sort_by, ascending=not f.descending, na_position="last", kind="stable")
    return out.head(f.limit)


def caption(row: pd.Series) -> str:
    score = "-" if pd.isna(row["score"]) else f"{row['score']:.3f}"
    where = row["split"] if isinstance(row["split"], str) else (row["reject_reason"] or "rejected")
    return f"{row['crop_id']} | score {score} | {where} | {row['source']}"


def crop_image(row: pd.Series, thumb: int = 192) -> np.ndarray:
    """The crop: the written PNG for selected crops, else cut from the source photo."""

    img = None
    if isinstance(row.get("image_path"), str):
        p = Path(row["dataset_dir"]) / row["image_path"]
        if p.is_file():
            img = read_rgb(p)
    if img is None:
        src = read_rgb(row["source_path"])
        x0, y0, s = int(row["crop_x0"]), int(row["crop_y0"]), int(row["crop_size"])
        h, w = src.shape[:2]
        pad = np.zeros((s, s, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
        pad[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = src[sy0:sy1, sx0:sx1]
        img = pad
    return cv2.resize(img, (thumb, thumb), interpolation=cv2.INTER_AREA)


def gallery(df: pd.DataFrame) -> list[tuple[np.ndarray, str]]:
    items = []
    for _, row in df.iterrows():
        try:
            items.append((crop_image(row), caption(row)))
        except Exception:  # noqa: BLE001 - a moved source photo: show a grey tile, keep the rest
            items.append((np.full((192, 192, 3), 128, np.uint8), caption(row) + " | source missing"))
    return items


def in_source(row: pd.Series) -> tuple[np.ndarray, dict]:
    """The source photo with the person box and the square crop drawn, and the row's fields."""
    src = read_rgb(row["source_path"])
    box = [row["person_x0"], row["person_y0"], row["person_x1"], row["person_y1"]]
    img = draw_boxes(src, [box], [row["crop_id"]], squares=[(row["crop_x0"], row["crop_y0"], row["crop_size"])])
    keep = [c for c in row.index if c not in ("dataset_dir",)]
    info = {c: (None if isinstance(row[c], float) and np.isnan(row[c]) else
                (row[c].item() if hasattr(row[c], "item") else row[c])) for c in keep}
    return img, info
