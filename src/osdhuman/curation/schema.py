"""Each HQ-ACF table's one schema (pyarrow), and the pandas dtypes derived from it.

Three tables cross process and file boundaries:

    records     one row per source image (``OUT/.work/records/<source>@<key>/part-*.parquet``)
    candidates  one row per square crop of a person box, plus one ``iqa_<metric>`` column per
                metric scored (shard files, then ``manifest.parquet``)
    rejects     one row per image or box left out, with its stage and reason

Everything else (the column lists, the pandas frames a worker returns, the parquet bytes of a
shard) is derived from these schemas, so a column is declared once, here.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RECORDS = pa.schema([
    ("source", pa.string()), ("key", pa.string()), ("path", pa.string()),
    ("boxes", pa.list_(pa.list_(pa.float64()))),  # null: run the detector
    ("size", pa.list_(pa.int64())), ("normalized", pa.bool_()), ("flags", pa.list_(pa.string())),
])

CANDIDATES = pa.schema([
    ("crop_id", pa.string()), ("source", pa.string()), ("source_image", pa.string()),
    ("source_path", pa.string()), ("image_w", pa.int64()), ("image_h", pa.int64()),
    ("box_index", pa.int64()),
    ("person_x0", pa.float64()), ("person_y0", pa.float64()), ("person_x1", pa.float64()),
    ("person_y1", pa.float64()),
    ("crop_x0", pa.int64()), ("crop_y0", pa.int64()), ("crop_size", pa.int64()),
    ("people_in_crop", pa.int64()), ("people_in_image", pa.int64()), ("laplacian_var", pa.float64()),
    ("box_flags", pa.string()), ("content_hash", pa.string()), ("phash", pa.int64()),
    ("phash_mirror", pa.int64()), ("reject_reason", pa.string()),
])

REJECTS = pa.schema([
    ("source", pa.string()), ("source_image", pa.string()), ("path", pa.string()), ("stage", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()),
    ("box_x0", pa.float64()), ("box_y0", pa.float64()), ("box_x1", pa.float64()), ("box_y1", pa.float64()),
])

CANDIDATE_COLUMNS = CANDIDATES.names
REJECT_COLUMNS = REJECTS.names


def metric_column(name: str) -> str:
    """Manifest column of an IQA metric (prefixed: metric names never clash with other columns)."""
    return f"iqa_{name}"


def candidate_schema(metric_names: list[str]) -> pa.Schema:
    """CANDIDATES plus one float64 score column per metric, in the order given."""
    return pa.schema(list(CANDIDATES) + [(metric_column(n), pa.float64()) for n in metric_names])


def _pandas_dtype(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "bool"
    return "object"  # strings: None where missing


def typed(df: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """``df`` with the pandas dtype of each of ``schema``'s columns (in place, returned)."""
    for f in schema:
        kind = _pandas_dtype(f.type)
        if kind == "object":
            df[f.name] = df[f.name].astype(object).where(df[f.name].notna(), None)
        else:
            df[f.name] = df[f.name].astype(kind)
    return df


def frame(rows: list[dict], schema: pa.Schema) -> pd.DataFrame:
    """Row dicts as a typed frame with exactly ``schema``'s columns (empty rows: an empty frame)."""
    return typed(pd.DataFrame(rows, columns=schema.names), schema)


def table_bytes(rows: list[dict], schema: pa.Schema, metadata: dict[str, str] | None = None) -> bytes:
    """Row dicts as parquet bytes with ``schema`` (pyarrow straight from the dicts: pandas costs
    ~10x more per small shard)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def frame_bytes(df: pd.DataFrame, metadata: dict | None = None) -> bytes:
    """A frame as parquet bytes; ``metadata`` values are stored as JSON beside pandas' own."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta.update({k.encode(): json.dumps(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
