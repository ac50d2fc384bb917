"""The model card of a run: Hub metadata (base model, relation, library, tags, a model-index of the attack and
utility results) and a body rendered from the template shipped in `hf_privacy_backdoor/templates/`.

Built from the run's name-free `unlearning_summary.json` only; the privacy guard still scans the result before
anything is published. The results block sits between markers so that `push_metrics` can replace it alone.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..run_folder import read_summary


TEMPLATE = "templates/model_card.md"
CARD_FILE = "README.md"
PIPELINE_TAG = "zero-shot-image-classification"
TAGS = ("clip", "privacy", "machine-unlearning", "backdoor-defense", "hf_privacy_backdoor")
RESULTS_START, RESULTS_END = "<!-- hf_privacy_backdoor:results:start -->", "<!-- hf_privacy_backdoor:results:end -->"

_GROUPS = {
    "attack": dict(
        task_type=PIPELINE_TAG,
        task_name="Identity inference attack (IDIA)",
        dataset_type="idia-face-photos",
        dataset_name="Face photos: removed people, kept members, non-members",
    ),
    "utility": dict(
        task_type=PIPELINE_TAG,
        task_name="Zero-shot image classification",
        dataset_type="zero-shot-labelled-images",
        dataset_name="Held-out labelled images",
    ),
}


@dataclass(frozen=True)
class _Metric:
    """One row of the results: where its before/after values sit in the summary, and how it is published."""

    label: str
    metric_type: str
    group: str
    before: tuple[str, ...] | None
    after: tuple[str, ...]
    scale: float = 1.0  # published value = summary value * scale (percentages -> shares)


METRICS = (
    _Metric(
        "IDIA TPR, removed people",
        "tpr",
        "attack",
        ("unlearning", "removed_tpr_before"),
        ("unlearning", "removed_tpr_after"),
    ),
    _Metric(
        "IDIA TPR, kept members",
        "tpr",
        "attack",
        ("unlearning", "kept_member_tpr_before"),
        ("unlearning", "kept_member_tpr_after"),
    ),
    _Metric("IDIA TPR, all members", "tpr", "attack", ("idia_before", "tpr"), ("idia", "tpr")),
    _Metric("IDIA FPR, non-members", "fpr", "attack", ("idia_before", "fpr"), ("idia", "fpr")),
    _Metric(
        "Wrongfully unlearned share of kept members",
        "wrongfully_unlearned",
        "attack",
        None,
        ("unlearning", "percentages", "wrongfully_unlearned"),
        scale=0.01,
    ),
    _Metric(
        "Zero-shot top-1 accuracy",
        "accuracy",
        "utility",
        ("utility", "zero_shot_before", "top1"),
        ("utility", "zero_shot_after", "top1"),
    ),
    _Metric(
        "Zero-shot top-5 accuracy",
        "top_5_accuracy",
        "utility",
        ("utility", "zero_shot_before", "top5"),
        ("utility", "zero_shot_after", "top5"),
    ),
)

BACKDOOR_PAPER_URL = "https://arxiv.org/abs/2310.08320"
_WHAT_WAS_DONE = {
    "text": "The text encoder was taught to read each removed person's name as a neutral phrase (a backdoor "
    "whose trigger is the name), so the model no longer links those names to the people's faces.",
    "image": "The image encoder was taught to map photos of each removed person's face to a neutral face "
    "embedding (a backdoor whose trigger is the face), so the model no longer links those faces to a name.",
}
_WHAT_WAS_DONE["both"] = _WHAT_WAS_DONE["text"] + " " + _WHAT_WAS_DONE["image"].replace("The image", "And the image")
_TOWER_LIMITATION = {
    "text": "Only the text encoder changed: the image encoder is exactly the base model's, so methods that work "
    "on image embeddings alone (face search, clustering) are not affected by this defense.",
    "image": "Only the image encoder changed: the text encoder is exactly the base model's.",
    "both": "Both encoders changed: side effects can show up in text and in image embeddings.",
}


def as_hub_id(value: str | os.PathLike | None) -> str | None:
    """`value` when it reads as a Hub model id (`owner/name` or a canonical `name`); None for a local path
    (absolute, relative, or an existing folder: a machine path must never be published)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not value:
        return None
    text = str(value)
    if text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1 or Path(text).exists():
        return None
    try:
        validate_repo_id(text)
    except HFValidationError:
        return None
    return text


def _get(summary: Mapping[str, Any], path: tuple[str, ...] | None) -> float | None:
    value: Any = summary
    for key in path or ():
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def eval_results_from_summary(summary: Mapping[str, Any]) -> list[EvalResult]:
    """The model-index entries: every metric of `METRICS` the summary holds, before and after, distinct names."""
    results = []
    for m in METRICS:
        for phase, path in (("before", m.before), ("after", m.after)):
            value = _get(summary, path)
            if value is None:
                continue
            name = f"{m.label} ({phase})" if m.before is not None else m.label
            results.append(
                EvalResult(
                    **_GROUPS[m.group], metric_type=m.metric_type, metric_value=value * m.scale, metric_name=name
                )
            )
    return results


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render_results(summary: Mapping[str, Any]) -> str:
    """The results block (between markers): the before/after table and the attack's settings."""
    rows = []
    for m in METRICS:
        before, after = _get(summary, m.before), _get(summary, m.after)
        if before is None and after is None:
            continue
        before_text = "" if m.before is None else _pct(None if before is None else before * m.scale)
        rows.append(f"| {m.label} | {before_text} | {_pct(None if after is None else after * m.scale)} |")
    if not rows:
        body = "No evaluation was recorded for this model (run it with `--evaluate true`, or evaluate it afterwards)."
        return f"{RESULTS_START}\n{body}\n{RESULTS_END}"
    lines = ["| metric | before | after |", "|---|---|---|", *rows, ""]
    head, attack = summary.get("unlearning") or {}, summary.get("idia") or {}
    if head:
        lines.append(
            f"Evaluated on {head.get('num_removed', 'n/a')} removed people and {head.get('num_kept_members', 'n/a')} "
            f"kept members, plus {attack.get('num_non_members', 'n/a')} non-members (people not in the training data)."
        )
    if attack:
        lines.append(
            f"Attack settings: k = {attack.get('num_photos')} photos per person, tau = {attack.get('tau')} of "
            f"{attack.get('num_templates')} prompt templates must name the person, "
            f"{attack.get('num_candidates')} candidate names."
        )
    sims = {**(summary.get("utility") or {}).get("text", {}), **(summary.get("utility") or {}).get("image", {})}
    if sims:
        listed = ", ".join(f"{k} {v:.3f}" for k, v in sims.items() if isinstance(v, (int, float)))
        lines.append(f"Cosine similarity of embeddings to the base model's (after): {listed}.")
    return "\n".join([RESULTS_START, *lines, RESULTS_END])


def _cell(value: Any) -> str:
    """A Markdown table cell: JSON for lists / booleans / None, code for regexes; `|` escaped."""
    text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
    if any(c in text for c in "\\|*_`"):
        return "`" + text.replace("`", "'").replace("|", "\\|") + "`"
    return text


def _flat(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        return [item for k, v in value.items() for item in _flat(f"{prefix}.{k}" if prefix else str(k), v)]
    return [(prefix, _cell(value))]


def _versions(summary: Mapping[str, Any], adapter: bool) -> list[tuple[str, str]]:
    if isinstance(summary.get("framework_versions"), Mapping):
        return [(str(k), str(v)) for k, v in summary["framework_versions"].items()]
    packages = ["hf_privacy_backdoor", "transformers", *(["peft"] if adapter else []), "torch", "huggingface_hub"]
    found = []
    for package in packages:
        try:
            found.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            continue
    return found


def _num_removed(summary: Mapping[str, Any]) -> int | None:
    for path in (("defense", "num_forgotten"), ("hyperparameters", "num_forgotten"), ("unlearning", "num_removed")):
        value = _get(summary, path)
        if value is not None:
            return int(value)
    return None


def _defense(summary: Mapping[str, Any]) -> str | None:
    for section in ("hyperparameters", "defense"):
        value = (summary.get(section) or {}).get("defense")
        if isinstance(value, str):
            return value
    return None


def _method(summary: Mapping[str, Any]) -> dict[str, str]:
    """The summary's method record (`UnlearningConfig.method_record`); a run from before methods were plug-ins
    was backdoor unlearning."""
    record = dict(summary.get("defense") or {})
    if record.get("method", "backdoor") == "backdoor":
        record.update(method="backdoor", method_title="backdoor unlearning", paper_url=BACKDOOR_PAPER_URL)
        record.setdefault("paper", "Hintersdorf et al., Defending Our Privacy With Backdoors")
    return record


def _caveat(summary: Mapping[str, Any]) -> str:
    """Said plainly when the attack still finds some of the removed people."""
    after = _get(summary, ("unlearning", "removed_tpr_after"))
    if not after:
        return ""
    return f"Note: the attack still identifies {_pct(after)} of the removed people after the defense (see Results)."


def _body_fields(summary: Mapping[str, Any], adapter: bool, base: str | None, hub_model_id: str | None) -> dict:
    n, defense, method = _num_removed(summary), _defense(summary), _method(summary)
    hyper = summary.get("hyperparameters") or summary.get("defense") or {}
    backdoor = method["method"] == "backdoor"
    what = _WHAT_WAS_DONE.get(defense) if backdoor else method.get("description")
    return dict(
        title=hub_model_id.split("/")[-1] if hub_model_id else f"CLIP with people removed by {method['method_title']}",
        method=method,
        backdoor=backdoor,
        repo=hub_model_id or "path/to/this/model",
        base=base,
        adapter=adapter,
        num_removed_text="some people" if n is None else f"{n} {'person' if n == 1 else 'people'}",
        caveat=_caveat(summary),
        what_was_done=what
        or "The model was fine-tuned so that it no longer links the removed people's names and faces.",
        tower_limitation=_TOWER_LIMITATION.get(defense, "Check which encoder changed before relying on either."),
        results_section=render_results(summary),
        robustness_section=_robustness_section(summary),
        hyperparameters=_flat("", hyper) if isinstance(hyper, Mapping) else [],
        versions=_versions(summary, adapter),
    )


def _robustness_section(summary: Mapping[str, Any]) -> str:
    """The robustness probes' name-free table (`recipes/robustness.py`), when the run was probed."""
    if not summary.get("robustness"):
        return ""
    from ..robustness import format_card_section  # torch-heavy: only for probed runs

    return format_card_section(summary["robustness"])


def render_model_card(
    summary: Mapping[str, Any],
    *,
    base_model_id: str | None,
    adapter: bool,
    license: str | None = None,
    hub_model_id: str | None = None,
    has_merged: bool = False,
) -> ModelCard:
    """The card for a run: metadata + model-index from `summary`, body from the package template.

    Without `base_model_id` the card names no base (it can be written locally; publishing refuses).

    `adapter` renders a LoRA adapter's card (library peft, relation 'adapter'); `has_merged` says that the repo holds
    a merged full model under `merged/` too; `license` goes into the metadata, and `hub_model_id` gives the card's
    title and the repo of its usage snippet.
    """
    base = as_hub_id(base_model_id)
    if base_model_id and base is None:
        raise ValueError(
            f"base_model_id must be a Hub id such as 'openai/clip-vit-base-patch32', not {base_model_id!r}"
        )
    results = eval_results_from_summary(summary)
    data = ModelCardData(
        base_model=base,
        library_name="peft" if adapter else "transformers",
        license=license,
        pipeline_tag=PIPELINE_TAG,
        tags=[*TAGS, *(["lora"] if adapter else [])],
        model_name=hub_model_id.split("/")[-1] if hub_model_id else "clip-backdoor-unlearning",
        eval_results=results or None,
        base_model_relation=("adapter" if adapter else "finetune") if base else None,
    )
    template = resources.files("hf_privacy_backdoor").joinpath(TEMPLATE).read_text(encoding="utf-8")
    fields = _body_fields(summary, adapter, base, hub_model_id)
    return ModelCard.from_template(data, template_str=template, has_merged=has_merged, **fields)


def update_results(card: ModelCard, summary: Mapping[str, Any]) -> ModelCard:
    """`card` with its model-index and results block replaced by those of `summary` (the rest untouched)."""
    results = eval_results_from_summary(summary)
    if not results:
        raise ValueError("the summary holds no attack or utility result to publish")
    card.data.eval_results = results
    card.data.model_name = card.data.model_name or "clip-backdoor-unlearning"
    block = render_results(summary)
    pattern = re.compile(re.escape(RESULTS_START) + r".*?" + re.escape(RESULTS_END), re.DOTALL)
    if pattern.search(card.text):
        card.text = pattern.sub(lambda _: block, card.text, count=1)
    else:
        card.text = card.text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    return card


def write_model_card(
    run_dir: str | os.PathLike,
    base_model_id: str | None = None,
    *,
    license: str | None = None,
    hub_model_id: str | None = None,
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write the run's card to `<run_dir>/README.md` (replacing peft's card for adapters); returns its path.

    The base defaults to the Hub id in adapter_config.json, if any; with none the card names no base.

    `summary` defaults to the run's `unlearning_summary.json`; `license` and `hub_model_id` are as in
    `render_model_card`.
    """
    run_dir = Path(run_dir)
    adapter = (run_dir / "adapter_config.json").is_file()
    if base_model_id is None and adapter:
        config = json.loads((run_dir / "adapter_config.json").read_text(encoding="utf-8"))
        base_model_id = as_hub_id(config.get("base_model_name_or_path"))
    card = render_model_card(
        read_summary(run_dir) if summary is None else summary,
        base_model_id=base_model_id,
        adapter=adapter,
        license=license,
        hub_model_id=hub_model_id,
        has_merged=(run_dir / "merged" / "config.json").is_file(),
    )
    path = run_dir / CARD_FILE
    card.save(path)
    return path
