"""The Gradio layout of ``osdhuman app``: three tabs wired to ``restore_tab``,
``dataset_tab`` and ``results_tab``. Element ids (``elem_id``) are what the browser test uses."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import gradio as gr
import pandas as pd
from gradio.exceptions import InvalidPathError

from osdhuman.app import dataset_tab as ds
from osdhuman.app import results_tab as rs
from osdhuman.app.config import (
    AppConfig,
    FolderNotAllowed,
    allowed_folder,
    allowed_roots,
)
from osdhuman.app.restore_tab import MODES, TINY, RestoreService, check_request


def _quiet(cls):
    """A factory of ``cls`` components whose refusal of a request's value (not a choice, not a
    number, a file type it does not take) reaches the client as its one-line reason, with no
    traceback in the server's log: a bad request is the sender's mistake, not the app's.

    The instance's ``preprocess`` is wrapped rather than ``cls`` subclassed: Gradio's component
    metaclass writes a ``.pyi`` stub beside the module of every new component class, which
    would be a file written into the installed package at run time."""

    def make(*args, **kwargs):
        comp = cls(*args, **kwargs)
        original = comp.preprocess

        def preprocess(payload):
            try:
                return original(payload)
            except Exception as exc:  # noqa: BLE001 - whatever the component refuses is one line to the client
                value = repr(payload if not isinstance(payload, (list, dict)) else type(payload).__name__)[:80]
                why = " ".join(str(exc).split())
                raise gr.Error(f"{comp.label or cls.__name__}: {value} is not accepted ({why})",
                               print_exception=False) from None

        comp.preprocess = preprocess
        return comp

    return make


File, Dropdown, Radio, Slider, Number = (_quiet(c) for c in (gr.File, gr.Dropdown, gr.Radio, gr.Slider, gr.Number))


def _refuse(message: str):
    """A request the app will not run: the reason goes to the client (and the page), not a traceback to the log."""
    raise gr.Error(message, print_exception=False)


# ---- Restore tab ------------------------------------------------------------------------
def _restore_tab(service: RestoreService) -> None:
    gr.Markdown(service.banner(), elem_id="restore-banner")
    files = File(label="Photos", file_count="multiple", file_types=["image"], elem_id="restore-upload")
    with gr.Row():
        model = Dropdown(service.models(), value=service.models()[0], label="Model", elem_id="restore-model")
        mode = Radio(list(MODES), value="people + background", label="People mode")
        upscale = Slider(1, 4, value=1, step=0.5, label="Upscale")
    with gr.Row():
        color_fix = Dropdown(["adain", "wavelet", "none"], value="adain", label="Colour fix")
        tile = Number(512, precision=0, minimum=64, maximum=4096, step=64, label="Tile size (px)")  # an int in the API
        precision = Dropdown(["fp32", "bf16", "fp16"], value="fp32", label="Precision")
    run = gr.Button("Restore", variant="primary", elem_id="restore-run")
    status = gr.Markdown(elem_id="restore-status")
    pick = gr.Dropdown([], label="Photo", elem_id="restore-pick")
    with gr.Row():
        slider = gr.ImageSlider(label="before / after", elem_id="restore-slider", type="numpy")
        boxes = gr.Image(label="people (boxes: person, squares: crops restored)", elem_id="restore-boxes", type="numpy")
    timings = gr.JSON(label="timings (s)", elem_id="restore-timings")
    download = gr.File(label="download", file_count="multiple", elem_id="restore-download")
    views = gr.State([])

    def show(vs, name):
        v = next((v for v in vs if v.name == name), None)
        if v is None or v.after is None:
            return None, None, {"error": v.error} if v else {}
        return (v.before, v.after), v.boxes, v.timings

    def do_run(paths, model_, mode_, up, cf, tile_, prec):
        if not paths:
            return [], gr.update(choices=[], value=None), None, None, {}, None, "Upload one or more photos first."
        if (problem := check_request([str(p) for p in paths], tile_)) is not None:
            _refuse(problem)
        try:
            vs, report = service.run([str(p) for p in paths], model_, mode_, up, cf, int(tile_), prec)
        except Exception as exc:  # noqa: BLE001 - shown on the page as one line, the app goes on
            return [], gr.update(choices=[], value=None), None, None, {}, None, f"**Error:** {type(exc).__name__}: {exc}"
        ok = [v for v in vs if v.after is not None]
        lines = [f"Restored {len(ok)} of {len(vs)} photo(s) in {report['seconds']:.1f} s."]
        if model_ == TINY:
            lines.append("**UNTRAINED tiny preset: these outputs are not restorations.**")
        lines += [f"- {v.name}: {v.error}" for v in vs if v.error]
        first = ok[0].name if ok else None
        shown = show(vs, first)
        return (vs, gr.update(choices=[v.name for v in ok], value=first), *shown,
                [v.output for v in ok] or None, "\n".join(lines))

    run.click(do_run, [files, model, mode, upscale, color_fix, tile, precision],
              [views, pick, slider, boxes, timings, download, status])
    pick.change(show, [views, pick], [slider, boxes, timings])


# ---- Dataset tab ------------------------------------------------------------------------
def _dataset_tab(cfg: AppConfig) -> gr.Blocks:
    roots = allowed_roots(cfg)
    with gr.Row():
        folder = gr.Textbox(cfg.dataset_dir or "", label="build-dataset output folder", elem_id="dataset-folder", scale=4)
        load = gr.Button("Load", elem_id="dataset-load", scale=1)
    with gr.Row():
        status = gr.Dropdown(ds.STATUSES, value=ds.ALL, label="status")
        split = gr.Dropdown([ds.ALL], value=ds.ALL, label="split", allow_custom_value=True)
        source = gr.Dropdown([ds.ALL], value=ds.ALL, label="source", allow_custom_value=True)
    with gr.Row():
        metric = gr.Dropdown(["score"], value="score", label="metric range on", allow_custom_value=True)
        low = gr.Number(None, label="min")
        high = gr.Number(None, label="max")
        sort_by = gr.Dropdown(["score"], value="score", label="sort by", allow_custom_value=True)
        desc = gr.Checkbox(True, label="descending")
    summary = gr.Markdown(elem_id="dataset-summary")
    grid = gr.Gallery(label="crops", columns=6, height=520, elem_id="dataset-grid", allow_preview=False)
    with gr.Row():
        src_img = gr.Image(label="crop in its source photo", elem_id="dataset-source", type="numpy")
        info = gr.JSON(label="crop")
    rows = gr.State([])

    def refresh(path, st, sp, so, me, lo, hi, sb, de):
        if not path:
            return [], [], "Point at a `osdhuman build-dataset` output folder.", *([gr.update()] * 4)
        try:
            df = ds.load_manifest(allowed_folder(path, roots))
        except (ds.DatasetError, FolderNotAllowed) as exc:
            return [], [], f"**{exc}**", *([gr.update()] * 4)
        f = ds.Filters(st, sp or ds.ALL, so or ds.ALL, me, lo, hi, sb or "score", bool(de))
        shown = ds.filter_crops(df, f)
        n_sel = int((df["status"] == "selected").sum())
        text = (f"{len(df)} crops in `{path}`: {n_sel} selected, {len(df) - n_sel} rejected; "
                f"showing {len(shown)} (status {st}, split {f.split}, source {f.source}, sorted by {f.sort_by}).")
        cols = ds.score_columns(df)
        return (shown.to_dict("records"), ds.gallery(shown), text,
                gr.update(choices=ds.choices(df, "split")), gr.update(choices=ds.choices(df, "source")),
                gr.update(choices=cols), gr.update(choices=cols))

    inputs = [folder, status, split, source, metric, low, high, sort_by, desc]
    outputs = [rows, grid, summary, split, source, metric, sort_by]
    load.click(refresh, inputs, outputs)
    for c in (status, split, source, sort_by, desc, low, high):
        c.change(refresh, inputs, outputs)

    def pick(recs, evt: gr.SelectData):
        if not recs or evt.index is None or evt.index >= len(recs):
            return None, {}
        try:
            return ds.in_source(pd.Series(recs[evt.index]))
        except Exception as exc:  # noqa: BLE001 - a moved source photo
            return None, {"error": f"{type(exc).__name__}: {exc}"}

    grid.select(pick, [rows], [src_img, info])
    return refresh, inputs, outputs


# ---- Results tab ------------------------------------------------------------------------
def _results_tab(cfg: AppConfig):
    roots = allowed_roots(cfg)
    with gr.Row():
        folder = gr.Textbox(cfg.results_dir or "", label="evaluate output folder", elem_id="results-folder", scale=4)
        load = gr.Button("Load", elem_id="results-load", scale=1)
    table = gr.Markdown(elem_id="results-table")
    with gr.Row():
        sort_by = gr.Dropdown([], label="sort images by", allow_custom_value=True)
        desc = gr.Checkbox(True, label="descending")
    per = gr.Dataframe(label="per-image metrics", elem_id="results-per-image", interactive=False)
    stem = gr.Dropdown([], label="image", elem_id="results-stem", allow_custom_value=True)
    pics = gr.Gallery(label="LQ / methods / HQ", columns=4, height=420, elem_id="results-images")

    def refresh(path, sb, de):
        if not path:
            return "Point at a `osdhuman evaluate` output folder.", None, gr.update(), gr.update(), []
        try:
            res = rs.load_results(allowed_folder(path, roots))
        except (rs.ResultsError, FolderNotAllowed) as exc:
            return f"**{exc}**", None, gr.update(), gr.update(), []
        wide = rs.wide_table(res, sb, bool(de))
        stems = wide["stem"].tolist()
        first = stems[0] if stems else None
        return (res["table"] or "(no table.md)", wide, gr.update(choices=[c for c in wide.columns if c != "stem"]),
                gr.update(choices=stems, value=first), rs.side_by_side(res, first) if first else [])

    inputs, outputs = [folder, sort_by, desc], [table, per, sort_by, stem, pics]
    load.click(refresh, inputs, outputs)
    sort_by.change(refresh, inputs, outputs)
    desc.change(refresh, inputs, outputs)

    def show(path, s):
        try:
            return rs.side_by_side(rs.load_results(allowed_folder(path, roots)), s) if path and s else []
        except (rs.ResultsError, FolderNotAllowed, OSError):
            return []

    stem.change(show, [folder, stem], [pics])
    return refresh, inputs, outputs


def build_app(cfg: AppConfig | None = None, service: RestoreService | None = None) -> gr.Blocks:
    cfg = cfg or AppConfig()
    service = service or RestoreService(cfg)
    with gr.Blocks(title="OSDHuman", analytics_enabled=False) as demo:
        gr.Markdown("# OSDHuman: one-step human body restoration")
        with gr.Tabs():
            with gr.Tab("Restore", id="restore"):
                _restore_tab(service)
            with gr.Tab("Dataset", id="dataset"):
                d_refresh, d_in, d_out = _dataset_tab(cfg)
            with gr.Tab("Results", id="results"):
                r_refresh, r_in, r_out = _results_tab(cfg)
        if cfg.dataset_dir:
            demo.load(d_refresh, d_in, d_out)
        if cfg.results_dir:
            demo.load(r_refresh, r_in, r_out)
    _refuse_bad_paths_quietly(demo)
    return demo


def _refuse_bad_paths_quietly(demo: gr.Blocks) -> None:
    """A request naming a file that was never uploaded is refused by Gradio while it prepares the
    values, before any handler runs; that refusal (InvalidPathError) becomes a one-line gr.Error
    for the client, without a traceback in the log (this app's Blocks only)."""

    prepare = demo.preprocess_data

    async def preprocess_data(*args, **kwargs):
        try:
            return await prepare(*args, **kwargs)
        except InvalidPathError as exc:
            raise gr.Error(" ".join(str(exc).split()), print_exception=False) from None

    demo.preprocess_data = preprocess_data
