"""``OUT/report.html``: what the build kept and why (contact sheets, histograms, Table-1 summary)."""

from __future__ import annotations

import dataclasses
import html
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from osdhuman.charts import histogram_svg
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.schema import metric_column
from osdhuman.imageio import ImageReadError, read_rgb
from osdhuman.outputs import atomic_write_text

THUMB = 160


def _thumb(arr: np.ndarray, path: Path) -> None:
    small = cv2.resize(arr, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


def _table(df: pd.DataFrame, float_fmt: str = "{:.3f}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, r in df.iterrows():
        cells = []
        for v in r.tolist():
            if isinstance(v, (float, np.floating)):
                cells.append(f"<td>{float_fmt.format(v) if np.isfinite(v) else '-'}</td>")
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def summary_table(cand: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Table-1 style: mean of every metric per source (scored pool) and for the selected set."""
    pool = cand[cand["score"].notna()]
    cols = [metric_column(n) for n in names] + ["laplacian_var", "people_in_crop"]
    rows = []
    for src, g in pool.groupby("source", sort=True):
        rows.append({"set": f"{src} (all scored crops)", "crops": len(g), **{c: g[c].mean() for c in cols}})
    chosen = cand[cand["selected"]]
    rows.append({"set": "selected", "crops": len(chosen), **{c: chosen[c].mean() if len(chosen) else np.nan for c in cols}})
    for split, g in chosen.groupby("split", sort=True):
        rows.append({"set": f"selected / {split}", "crops": len(g), **{c: g[c].mean() for c in cols}})
    table = pd.DataFrame(rows, columns=["set", "crops", *cols])
    return table.rename(columns={metric_column(n): n for n in names})


def funnel_table(cand: pd.DataFrame, rejects: pd.DataFrame, inputs: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """Per source: images and person boxes parsed -> candidate crops -> scored -> selected per split."""
    rows = []
    splits = sorted(s for s in cand["split"].dropna().unique())
    for src in sorted(set(inputs) | set(cand["source"])):
        c = cand[cand["source"] == src]
        n_img, n_box = inputs.get(src, (0, 0))
        row = {"source": src, "images": n_img, "person boxes": n_box,
               "rejects": int((rejects["source"] == src).sum()) if len(rejects) else 0,
               "candidate crops": len(c), "scored": int(c["score"].notna().sum()), "selected": int(c["selected"].sum())}
        for sp in splits:
            row[f"selected {sp}"] = int((c["selected"] & (c["split"] == sp)).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def duplicate_tables(cand: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(groups per source pair, one row per group: members and what happened to them)."""
    imgs = cand[cand["dup_group"].notna()].drop_duplicates(["source", "source_image"])
    pair_counts: dict[tuple[str, str], int] = {}
    groups = []
    for g, members in imgs.groupby("dup_group", sort=True):
        srcs = sorted(set(members["source"]))
        pairs = [(a, b) for i, a in enumerate(srcs) for b in srcs[i:] if a != b or (members["source"] == a).sum() > 1]
        for pr in pairs:
            pair_counts[pr] = pair_counts.get(pr, 0) + 1
        crops = cand[cand["dup_group"] == g]
        kept = crops[crops["selected"]]
        groups.append({"dup_group": g, "images": len(members), "sources": ", ".join(srcs),
                       "members": ", ".join(f"{a}/{b}" for a, b in zip(members["source"], members["source_image"]))[:300],
                       "split": ", ".join(sorted(set(kept["split"].dropna()))) or "-",
                       "selected crops": len(kept), "dropped as duplicate": int((crops["reject_reason"] == "duplicate_image").sum())})
    pairs = pd.DataFrame([{"source a": a, "source b": b, "groups": n} for (a, b), n in sorted(pair_counts.items())],
                         columns=["source a", "source b", "groups"])
    return pairs, pd.DataFrame(groups, columns=["dup_group", "images", "sources", "members", "split", "selected crops",
                                                "dropped as duplicate"])


def _settings_table(cfg: CurationConfig) -> pd.DataFrame:
    rows = [{"setting": f"labels.{k}", "value": str(v)} for k, v in dataclasses.asdict(cfg.labels).items()]
    rows += [{"setting": f"dedup.{k}", "value": str(v)} for k, v in dataclasses.asdict(cfg.dedup).items()]
    rows += [{"setting": "blur.min_laplacian_var", "value": str(cfg.blur.min_laplacian_var)}]
    rows += [{"setting": f"boxes.{k}", "value": str(v)} for k, v in dataclasses.asdict(cfg.boxes).items()]
    return pd.DataFrame(rows)


def _source_thumb(path: str, dest: Path) -> str | None:
    """Thumbnail of a whole source image (letterboxed into THUMB x THUMB); None when unreadable."""


    try:
        rgb = read_rgb(path)
    except ImageReadError:
        return None
    h, w = rgb.shape[:2]
    s = THUMB / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(dest), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return dest.name


def _figure(name: str | None, caption: str) -> str:
    img = f'<img src="report/thumbs/{name}">' if name else ""
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def write_report(out: Path, cand: pd.DataFrame, rejects: pd.DataFrame, infos: list[dict], cfg: CurationConfig, render,
                 inputs: dict[str, tuple[int, int]] | None = None) -> Path:
    """``render(row)``: the pixels of a candidate crop that was not written (any square size:
    its thumbnail is an area-average of it)."""
    rdir = out / "report"
    tdir = rdir / "thumbs"
    if tdir.exists():  # thumbnails of an earlier run of this output directory
        shutil.rmtree(tdir)
    tdir.mkdir(parents=True, exist_ok=True)
    names = [m["name"] for m in infos]
    lower = {m["name"]: m["lower_better"] for m in infos}
    scored = cand[cand["score"].notna()]
    chosen = cand[cand["selected"]]

    hists = []
    for n in names + ["score"]:
        col = "score" if n == "score" else metric_column(n)
        p = rdir / f"hist_{n}.svg"
        atomic_write_text(p, histogram_svg(n, scored[col].to_numpy(np.float64), chosen[col].to_numpy(np.float64), lower.get(n)))
        hists.append(p.name)
    for stale in rdir.glob("hist_*"):  # an earlier run's (other metrics, or PNGs of older versions)
        if stale.name not in hists:
            stale.unlink()

    n_th = cfg.exec.report_thumbs

    def sheet(rows: pd.DataFrame, from_disk: bool) -> str:
        cells = []
        for r in rows.to_dict("records"):
            tp = tdir / f"{r['crop_id']}.jpg"
            try:
                if from_disk:
                    arr = cv2.cvtColor(cv2.imread(str(out / r["image_path"])), cv2.COLOR_BGR2RGB)
                else:
                    arr = render(r)
                _thumb(arr, tp)
            except Exception as exc:  # noqa: BLE001 - a thumbnail is not worth failing the run
                cells.append(f"<figure><figcaption>{html.escape(r['crop_id'])}: {html.escape(str(exc))}</figcaption></figure>")
                continue
            score = r["score"]
            cap = f"{r['crop_id']}<br>score {score:.2f}" if np.isfinite(score) else r["crop_id"]
            if r.get("reject_reason"):
                cap += f"<br>{r['reject_reason']}"
            elif r.get("split"):
                cap += f"<br>{r['split']}"
            cells.append(f'<figure><img src="report/thumbs/{tp.name}" width="{THUMB}" height="{THUMB}">'
                         f"<figcaption>{html.escape(cap).replace('&lt;br&gt;', '<br>')}</figcaption></figure>")
        return '<div class="sheet">' + "".join(cells) + "</div>" if cells else "<p>none</p>"

    sel_rows = chosen.sort_values(["score", "crop_id"], ascending=[False, True]).head(n_th)
    rej_scored = scored[~scored["selected"]].sort_values(["score", "crop_id"], ascending=[True, True]).head(n_th)

    reasons = pd.concat([
        rejects.groupby(["stage", "reason"]).size().rename("count").reset_index(),
        cand[cand["reject_reason"].notna()].assign(stage="crops", reason=lambda d: d["reject_reason"])
        .groupby(["stage", "reason"]).size().rename("count").reset_index(),
    ], ignore_index=True)

    metric_rows = pd.DataFrame([{"metric": m["name"], "backend": m["backend"], "lower is better": m["lower_better"],
                                 "threshold": cfg.iqa.thresholds.get(m["name"], "-"),
                                 "settings": ", ".join(f"{k}={v}" for k, v in (m.get("settings") or {}).items())}
                                for m in infos])
    backends = sorted({m["backend"] for m in infos})
    rules = "".join(f"; source {html.escape(k)}: keep {r.keep_fraction:.4g}, thresholds {r.thresholds}, at most {r.at_most}, "
                    f"max count {r.max_count or 'all'}" for k, r in cfg.selection.sources.items())
    n_images = cand["source_image"].nunique()
    funnel = funnel_table(cand, rejects, inputs or {})
    per_source = (rejects.groupby(["source", "stage", "reason"]).size().rename("count").reset_index()
                  if len(rejects) else pd.DataFrame(columns=["source", "stage", "reason", "count"]))
    pair_table, group_table = duplicate_tables(cand) if "dup_group" in cand else (pd.DataFrame(), pd.DataFrame())
    dup_cells = []
    for g in group_table.head(n_th)["dup_group"] if len(group_table) else []:
        members = cand[cand["dup_group"] == g].drop_duplicates(["source", "source_image"])
        for k, r in enumerate(members.to_dict("records")):
            name = _source_thumb(r["source_path"], tdir / f"dup_{g}_{k}.jpg")
            dup_cells.append(_figure(name, f"{g}: {r['source']}/{r['source_image']}"))
    blur_cells = []
    for k, r in enumerate(rejects[rejects["stage"] == "blur"].head(n_th).to_dict("records") if len(rejects) else []):
        name = _source_thumb(r["path"], tdir / f"blur_{k}.jpg")
        blur_cells.append(_figure(name, f"{r['source']}/{r['source_image']}: {r['detail']}"))
    people = cand.drop_duplicates(["source", "source_image"])["people_in_image"]
    people_line = (f"{people.mean():.4f} people per source image with candidate crops (after merging boxes of one "
                   f"person under several labels; paper: 3.4154)" if len(people) else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>HQ-ACF build report</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1400px}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:right}}th{{background:#eee}}
.sheet{{display:flex;flex-wrap:wrap;gap:6px}}figure{{margin:0;width:{THUMB}px;font-size:10px;word-break:break-all}}
img{{display:block}}.hists img{{display:inline-block;margin:4px}}</style></head><body>
<h1>HQ-ACF build report</h1>
{f'<p><b>Preset:</b> {html.escape(cfg.preset)}</p>' if cfg.preset else ''}
{f'<p style="color:#b00"><b>{html.escape(cfg.metrics_note)}</b></p>' if cfg.metrics_note else ''}
<p>{len(cand)} candidate crops from {n_images} source images with candidates; {int(scored.shape[0])} scored;
<b>{len(chosen)} selected</b> (keep fraction {cfg.selection.keep_fraction:.4g} of the pool, then per-metric thresholds{rules}).
Sources: {html.escape(', '.join(cfg.sources))}.</p>
<h2>IQA scores</h2><p>Backend(s): <b>{html.escape(', '.join(backends))}</b>; metrics: <b>{html.escape(', '.join(names))}</b>.
Normalised score = mean over metrics of the z-score over the whole pool, lower-is-better metrics negated (paper Eq. 1).</p>
{_table(metric_rows)}
<h2>Summary (Table 1 style: mean per source and for the selected set)</h2>
{_table(summary_table(cand, names))}
<h2>Histograms</h2><div class="hists">{''.join(f'<img src="report/{h}">' for h in hists)}</div>
<h2>Funnel per source</h2><p>{html.escape(people_line)}</p>{_table(funnel, "{}")}
<h2>Rejections</h2>{_table(reasons, "{}")}
<h3>Rejects per source and reason</h3>{_table(per_source, "{}")}
<h3>Rejected before cropping as blurry (threshold blur.min_laplacian_var = {cfg.blur.min_laplacian_var})</h3>
<div class="sheet">{''.join(blur_cells) or '<p>none</p>'}</div>
<h2>Duplicate groups</h2><p>{len(group_table)} groups of source images with equal pixels or perceptual hashes
within {cfg.dedup.max_hamming} bits (mirror images {'included' if cfg.dedup.mirror else 'not included'}); a group never spans
two splits{'' if cfg.dedup.keep_duplicates else '; one image per group keeps its crops'}.</p>
<h3>Groups per source pair</h3>{_table(pair_table, "{}")}
<h3>Groups (up to {n_th})</h3>{_table(group_table.head(n_th), "{}")}
<div class="sheet">{''.join(dup_cells)}</div>
<h2>Label, box and duplicate settings</h2>{_table(_settings_table(cfg), "{}")}
<h2>Selected crops (best first, up to {n_th})</h2>{sheet(sel_rows, True)}
<h2>Scored but not selected (worst first, up to {n_th})</h2>{sheet(rej_scored, False)}
</body></html>"""
    return atomic_write_text(out / "report.html", page)
