"""Evaluation: the identity inference attack (privacy), zero-shot accuracy and similarities (utility), reports.

Modules: `prompts` (template sets, prompt embeddings) and `results` (verdicts, before/after comparison) are
the shared pieces; `idia` (the attack) and `utility` (zero-shot accuracy, similarities) compute on a model;
`report` turns their outputs into local files and a name-free public summary.
"""

from .idia import TextEmbeddings, compute_text_embeddings, run_idia, text_tower_fingerprint
from .metrics import IDIA_METRIC_PATH
from .prompts import idia_templates, imagenet_templates, load_templates
from .report import format_public_summary, public_summary, write_reports
from .results import AttackResult, AttackSettings, Comparison, PersonChange, PersonResult, compare_results
from .utility import (
    class_embeddings,
    image_similarities,
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
