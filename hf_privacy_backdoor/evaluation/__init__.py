"""Evaluation: the identity inference attack (privacy), zero-shot accuracy and similarities (utility), reports."""

from .idia import (
    AttackResult,
    AttackSettings,
    Comparison,
    PersonChange,
    PersonResult,
    TextEmbeddings,
    compare_results,
    compute_text_embeddings,
    idia_templates,
    run_idia,
    text_tower_fingerprint,
)
from .metrics import IDIA_METRIC_PATH
from .report import format_public_summary, public_summary, write_reports
from .utility import (
    class_embeddings,
    image_similarities,
    imagenet_templates,
    load_templates,
    text_similarities,
    zero_shot_accuracy,
    zero_shot_dataset,
    zero_shot_folder,
)


__all__ = [
    "AttackResult",
    "AttackSettings",
    "Comparison",
    "IDIA_METRIC_PATH",
    "PersonChange",
    "PersonResult",
    "TextEmbeddings",
    "class_embeddings",
    "compare_results",
    "compute_text_embeddings",
    "format_public_summary",
    "idia_templates",
    "image_similarities",
    "imagenet_templates",
    "load_templates",
    "public_summary",
    "run_idia",
    "text_similarities",
    "text_tower_fingerprint",
    "write_reports",
    "zero_shot_accuracy",
    "zero_shot_dataset",
    "zero_shot_folder",
]
