"""Publishing to the Hugging Face Hub, safely for the people who asked to be removed.

`publish` stages an allow-list of a run folder's files with a rendered model card, refuses when a forgotten name
would go out (`scan_for_names`), and sends everything in one commit; `push_metrics` updates the results of an
existing repo's card; `write_model_card` writes the same card into a run folder. Stdlib + huggingface_hub only
at import time, so that `recipes/publish.py` starts fast.
"""

from .card import eval_results_from_summary, render_model_card, render_results, update_results, write_model_card
from .guard import NameHit, PublishError, PushFailed, name_orders, redact, refuse_on_names, scan_for_names
from .publish import PublishResult, probe_hub, publish, push_metrics, retry_command, stage_run


__all__ = [
    "NameHit",
    "PublishError",
    "PublishResult",
    "eval_results_from_summary",
    "name_orders",
    "PushFailed",
    "redact",
    "probe_hub",
    "publish",
    "push_metrics",
    "refuse_on_names",
    "render_model_card",
    "render_results",
    "retry_command",
    "scan_for_names",
    "stage_run",
    "update_results",
    "write_model_card",
]
