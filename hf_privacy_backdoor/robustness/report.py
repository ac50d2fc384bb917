"""The probes' report: the per-role results (`RobustnessReport`), its name-free public part, the private report
files and the public summary section, and the tables (Markdown, model card, demo line)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evaluation.report import assert_no_names
from ..run_folder import ROBUSTNESS_JSON, ROBUSTNESS_MD, RunFiles
from ..utils import write_json
from .formatting import fmt, pair
from .loading import RunFolder
from .probes.exposure import most_exposed
from .registry import PROBES, Row


ROLES = ("defended", "base", "retrained")
FORMAT_VERSION = 1
PRIVATE_KEYS = ("people", "ranks")  # per-person entries: private report only


@dataclass
class RobustnessReport:
    """Every probe's results per role ('defended', 'base', 'retrained'); `public()` keeps the aggregates."""

    run_dir: Path
    removed: list[str]
    settings: dict[str, Any]
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # every evaluated name (for the no-name check)

    def public(self) -> dict[str, Any]:
        """The publishable report: settings and aggregates only; raises if any removed or evaluated name is left."""
        public = {"format_version": FORMAT_VERSION, "settings": self.settings, **_strip_private(self.roles)}
        assert_no_names(public, self.removed + self.names)
        return public

    def to_dict(self) -> dict[str, Any]:
        """The full report, per-person entries and the removed names included (for the run's private folder)."""
        return {"format_version": FORMAT_VERSION, "removed": self.removed, "settings": self.settings, **self.roles}


def _strip_private(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _strip_private(v) for k, v in obj.items() if k not in PRIVATE_KEYS}
    if isinstance(obj, list):
        return [_strip_private(v) for v in obj]
    return obj


def write_robustness(run: RunFolder, report: RobustnessReport) -> None:
    """`private/report/robustness.{json,md}` (with names) and the `robustness` section of the public summary."""
    files = RunFiles(run.path)
    files.report_dir.mkdir(parents=True, exist_ok=True)
    public = report.public()
    write_json(files.report_dir / ROBUSTNESS_JSON, report.to_dict())
    (files.report_dir / ROBUSTNESS_MD).write_text(format_markdown(report))
    summary = files.summary()
    summary["robustness"] = public
    assert_no_names(summary, report.removed + report.names)
    write_json(files.summary_file, summary)


def table_rows(public: Mapping[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(probe, metric, {role: cell}) rows from the public section (name-free); '-' where a role lacks the probe.
    The exact-name attack first, then each registered probe's rows (from the first role that ran it)."""
    roles = [r for r in ROLES if r in public]
    rows = exact_rows()
    for name, probe in PROBES.items():
        first = next((public[r][name] for r in roles if name in public[r]), None)
        if first:
            rows += (probe.rows or default_rows(name))(first)
    return [(probe, metric, {r: _cell(cell, public[r]) for r in roles}) for probe, metric, cell in rows]


def exact_rows() -> list[Row]:
    """The table rows of the exact-name attack, which every role runs before the probes."""
    return [
        ("exact name", "removed TPR / kept TPR", lambda r: pair(r["exact"], "removed_tpr", "kept_tpr")),
        ("exact name", "removed mean correct templates", lambda r: fmt(r["exact"]["removed_mean_correct_templates"])),
        ("exact name", "kept sharing a name part: TPR (people)", lambda r: _sharing_cell(r["exact"])),
    ]


def default_rows(name: str) -> Callable[[Mapping[str, Any]], list[Row]]:
    """Rows of a probe that declares none: one per number (or text) at the top of its results."""

    def rows(first: Mapping[str, Any]) -> list[Row]:
        scalars = [k for k, v in first.items() if v is None or isinstance(v, (int, float, str))]
        return [(name, key, lambda r, k=key: fmt(r[name][k])) for key in scalars]

    return rows


def _cell(cell: Callable[[Mapping[str, Any]], str], role: Mapping[str, Any]) -> str:
    try:
        return cell(role)
    except (KeyError, IndexError, TypeError):  # this role did not run the probe
        return "-"


def _sharing_cell(stats: Mapping[str, Any]) -> str:
    if not stats.get("num_sharing"):
        return "nobody shares"
    return f"{fmt(stats['sharing_kept_tpr'])} ({stats['num_sharing']})"


def format_table(public: Mapping[str, Any]) -> str:
    """A Markdown table: one row per probe and metric, one column per role (defended, base, retrained)."""
    roles = [r for r in ROLES if r in public]
    lines = [
        "| probe | metric | " + " | ".join(roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for probe, metric, values in table_rows(public):
        lines.append(f"| {probe} | {metric} | " + " | ".join(values[r] for r in roles) + " |")
    return "\n".join(lines)


def format_markdown(report: RobustnessReport) -> str:
    """The private report: the table, then each removed person's numbers (names: never publish this file)."""
    lines = [
        "# Robustness probes (private: names the removed people)",
        "",
        f"Settings: {json.dumps(report.settings)}",
        "",
        format_table(report.public()),
        "",
        "## Removed people",
        "",
        "| person | role | exact correct templates | text diff rank | photo diff rank | text single rank |",
        "|---|---|---|---|---|---|",
    ]
    for name in report.removed:
        for role, results in report.roles.items():
            exposure = results.get("exposure", {})
            keys = ("text_diff", "image_diff", "text_single")
            ranks = [fmt(exposure.get(k, {}).get("ranks", {}).get(name)) for k in keys]
            lines.append(f"| {name} | {role} | {results['exact']['people'].get(name)} | " + " | ".join(ranks) + " |")
    return "\n".join(lines) + "\n"


def format_card_section(public: Mapping[str, Any]) -> str:
    """The model card's robustness section (name-free): what was probed and the table."""
    settings = public.get("settings", {})
    return (
        "## Robustness\n\n"
        f"Stronger attacks than the exact-name IDIA ({', '.join(settings.get('probes', []))}), on the defended "
        f"model, on the base model (control) and{'' if 'retrained' in public else ' (not built)'} on a model "
        f"retrained without the removed people; {settings.get('num_candidates')} candidate names, "
        f"{settings.get('num_photos')} evaluation photos per person. AUC 0.5 = the removed people do not stand "
        "out; 1.0 = they rank first.\n\n" + exposure_in_words(public) + format_table(public) + "\n"
    )


def exposure_in_words(public: Mapping[str, Any]) -> str:
    """The model-diff exposure as a plain sentence (name-free), for the card; empty without the probe."""
    exposure = public.get("defended", {}).get("exposure")
    if not exposure:
        return ""
    settings = public.get("settings", {})
    which, worst = most_exposed(exposure)
    if worst["auc_known"] is None or worst.get("mean_rank_known") is None:
        return ""
    suspects = worst["num_known"] + 1
    cover = settings.get("num_cover") or 0
    text = (
        "**Exposure in plain words.** The defense must change how the model sees the removed people, and that "
        f"change is visible: someone who holds both the base model and this one, and ranks the {suspects} people "
        f"the base model recognises by how much their {which} moved, finds each removed person at rank "
        f"{worst['mean_rank_known']:.1f} on average (AUC {fmt(worst['auc_known'])}; 0.5 would be chance). "
    )
    if cover:
        text += f"{cover} cover people were removed in the same run, so a high rank does not tell who asked. "
    else:
        text += "No cover people were removed with them: publishing this model next to its base points at them. "
    return text + "\n\n"


def format_demo_line(public: Mapping[str, Any]) -> str:
    """One line per defense: worst-case variant, worst relearning, text/photo diff exposure AUC (defended)."""
    d = public.get("defended", {})
    parts = [f"exact removed TPR {fmt(d.get('exact', {}).get('removed_tpr'))}"]
    if "variants" in d:
        worst = d["variants"]["worst"]
        which = f" ({worst['variant']})" if worst["removed_tpr"] else ""
        parts.append(f"name variants: worst removed TPR {fmt(worst['removed_tpr'])}{which}")
    if "relearn" in d:
        worst = max(d["relearn"]["by_setting"], key=lambda s: s["removed_tpr_max"])
        which = f" (lr {worst['learning_rate']:g}, {worst['steps']} steps)" if worst["removed_tpr_max"] else ""
        parts.append(f"after relearning: worst removed TPR {fmt(worst['removed_tpr_max'])}{which}")
    if "exposure" in d:
        e = d["exposure"]
        which, worst = most_exposed(e)
        rank = worst.get("mean_rank_known")
        among = f" (removed at rank {rank:.1f} of {worst['num_known'] + 1} known people by {which})" if rank else ""
        parts.append(
            f"exposure AUC names {fmt(e['text_diff']['auc_all'])}, photos {fmt(e['image_diff']['auc_all'])}{among}"
        )
    return "robustness: " + "; ".join(parts)
