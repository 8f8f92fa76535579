"""Inference pipelines: ``RestorationPipeline`` (any image size, tiling, colour fix,
precision) and ``restore_paths`` (files/folders -> output folder, what ``osdhuman restore``
runs; ``restore_people`` / ``PeopleConfig`` for whole photos of people, person by person)."""

from osdhuman.pipelines.box_file import BoxFileError, load_box_file
from osdhuman.pipelines.color_fix import (
    adain_color_fix,
    apply_color_fix,
    wavelet_color_fix,
)
from osdhuman.pipelines.people import PeopleConfig, PeopleResult, plan_people, restore_people
from osdhuman.pipelines.pipeline_restoration import (
    PRECISIONS,
    PipelineConfig,
    RestorationOutput,
    RestorationPipeline,
    resolve_device,
)
from osdhuman.pipelines.restore import (
    OutputCollisionError,
    RestoreConfig,
    RestoreReport,
    restore_paths,
)
from osdhuman.pipelines.tiling import blend_profile, tile_starts, tiled_map

__all__ = [
    "BoxFileError",
    "PeopleConfig",
    "PeopleResult",
    "load_box_file",
    "plan_people",
    "restore_people",
    "PRECISIONS",
    "OutputCollisionError",
    "PipelineConfig",
    "RestorationOutput",
    "RestorationPipeline",
    "RestoreConfig",
    "RestoreReport",
    "adain_color_fix",
    "apply_color_fix",
    "blend_profile",
    "resolve_device",
    "restore_paths",
    "tile_starts",
    "tiled_map",
    "wavelet_color_fix",
]
