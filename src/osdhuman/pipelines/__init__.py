"""Inference pipelines: ``RestorationPipeline`` (any image size, tiling, colour fix,
precision) and ``restore_paths`` (files/folders -> output folder, what ``osdhuman restore``
runs; ``restore_people`` / ``PeopleConfig`` for whole photos of people, person by person).
``weights_from_env`` tells the demo whether real weights are configured
(OSDHUMAN_WEIGHTS, OSDHUMAN_BASE_MODEL, OSDHUMAN_HFIE_ENCODER)."""

from osdhuman.pipelines.box_file import BoxFileError, load_box_file
from osdhuman.pipelines.color_fix import (
    adain_color_fix,
    apply_color_fix,
    wavelet_color_fix,
)
from osdhuman.pipelines.pipeline_restoration import (
    PRECISIONS,
    PipelineConfig,
    RestorationOutput,
    RestorationPipeline,
    resolve_device,
)
from osdhuman.pipelines.people import PeopleConfig, PeopleResult, plan_people, restore_people
from osdhuman.pipelines.restore import (
    ENV_BASE_MODEL,
    ENV_HFIE_ENCODER,
    ENV_WEIGHTS,
    HOW_TO,
    OutputCollisionError,
    RestoreConfig,
    RestoreReport,
    WeightsSetup,
    demo_restore,
    restore_paths,
    weights_from_env,
)
from osdhuman.pipelines.tiling import blend_profile, tile_starts, tiled_map

__all__ = [
    "BoxFileError",
    "PeopleConfig",
    "PeopleResult",
    "load_box_file",
    "plan_people",
    "restore_people",
    "ENV_BASE_MODEL",
    "ENV_HFIE_ENCODER",
    "ENV_WEIGHTS",
    "HOW_TO",
    "PRECISIONS",
    "OutputCollisionError",
    "PipelineConfig",
    "RestorationOutput",
    "RestorationPipeline",
    "RestoreConfig",
    "RestoreReport",
    "WeightsSetup",
    "adain_color_fix",
    "apply_color_fix",
    "blend_profile",
    "demo_restore",
    "resolve_device",
    "restore_paths",
    "tile_starts",
    "tiled_map",
    "wavelet_color_fix",
    "weights_from_env",
]
