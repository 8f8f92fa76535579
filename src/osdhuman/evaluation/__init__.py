"""The PERSONA benchmark: evaluate restored folders against HQ references (Table 2) and
measure the no-reference quality of datasets (Table 1). Needs no diffusion model."""

from osdhuman.evaluation.config import DatasetQualityConfig, EvaluateConfig
from osdhuman.evaluation.dataset_quality import dataset_quality
from osdhuman.evaluation.evaluate import EvaluationResult, evaluate_methods, merged_table
from osdhuman.evaluation.tables import ColumnGroup, format_value, markdown_table, rank_marks

__all__ = [
    "ColumnGroup",
    "DatasetQualityConfig",
    "EvaluateConfig",
    "EvaluationResult",
    "dataset_quality",
    "evaluate_methods",
    "format_value",
    "markdown_table",
    "merged_table",
    "rank_marks",
]
