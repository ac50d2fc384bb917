"""Evaluation reports: local files that may name people, and a name-free public summary.

`write_reports` writes the local report (JSON with every number and setting, Markdown, a PNG plot of the
correct templates per person). `public_summary` keeps aggregates only; it is what may go into a model
card. Privacy is the product: a forgotten name must never reach a file meant for publication, so the
summary is built from an allow-list of numbers and then checked for every known name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.names import normalize_name
from ..utils import write_json
from .results import CATEGORIES, MEMBER, NON_MEMBER, UNKNOWN, AttackResult, Comparison


REPORT_JSON, REPORT_MD, REPORT_PNG, ATTACK_JSON = "report.json", "report.md", "correct_templates.png", "attack.json"

_PUBLIC_UTILITY_KEYS = (
    "top1",
    "top5",
    "num_images",
    "num_classes",
    "num_templates",
    "sim_clean",
    "sim_backdoor",
    "sim_target",
    "sim_id",
)
_CATEGORY_LABELS = {
    "correctly_unlearned": "correctly unlearned",
    "failed": "failed",
    "wrongfully_unlearned": "wrongfully unlearned",
    "newly_recalled": "newly recalled",
    "unchanged": "unchanged",
}


# ----------------------------------------------------------------------------------------------------------
# Public, name-free summary


def public_summary(
    attack: AttackResult | None = None,
    comparison: Comparison | None = None,
    utility: Mapping[str, Any] | None = None,
    before: AttackResult | None = None,
) -> dict[str, Any]:
    """Aggregates only (no person's name): attack totals, the defense's headline and categories, utility.

    Raises RuntimeError if any evaluated or candidate name would appear in the summary.

    `before` adds the earlier run's attack totals, `comparison` (from `compare_results`) the defense's outcome.
    """
    summary: dict[str, Any] = {}
    if attack is not None:
        summary["idia"] = _public_attack(attack)
    if before is not None:
        summary["idia_before"] = _public_attack(before)
    if comparison is not None:
        summary["unlearning"] = {
            **comparison.headline(),
            "counts": comparison.counts(),
            "percentages": comparison.percentages(),
        }
    if utility:
        summary["utility"] = _public_utility(utility)
    names = _known_names(attack, before, comparison)
    assert_no_names(summary, names)
    return summary


def _public_attack(result: AttackResult) -> dict[str, Any]:
    totals = result.totals()
    keys = ("tpr", "fnr", "fpr", "num_people", "num_members", "num_non_members", "flagged_members")
    out = {k: totals[k] for k in keys}
    out["flagged_non_members"] = totals["flagged_non_members"]
    s = result.settings
    out.update(num_photos=s.num_photos, tau=s.tau, num_candidates=s.num_candidates, num_templates=len(s.templates))
    return out


def _public_utility(utility: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in utility.items():
        if isinstance(value, Mapping):
            inner = {k: v for k, v in value.items() if k in _PUBLIC_UTILITY_KEYS and _is_number(v)}
            if inner:
                out[str(key)] = inner
        elif key in _PUBLIC_UTILITY_KEYS and _is_number(value):
            out[key] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _known_names(*results) -> set[str]:
    names: set[str] = set()
    for r in results:
        if r is None:
            continue
        names.update(p.name for p in r.people)
        if isinstance(r, AttackResult):
            names.update(r.skipped)
            names.update(r.candidates)
        else:
            names.update(r.not_removable)
    return names


def assert_no_names(obj: Any, names: set[str] | list[str]) -> None:
    """Raise RuntimeError if any of `names` (case-, space- and underscore-insensitive) appears in `obj`'s JSON."""
    text = json.dumps(obj, default=str).casefold()
    leaked = []
    for name in names:
        key = normalize_name(name)
        if key and (key in text or key.replace(" ", "_") in text):
            leaked.append(name)
    if leaked:
        raise RuntimeError(
            f"refusing to publish: {len(leaked)} person name(s) would appear in a public summary; this is a bug"
        )


def format_public_summary(summary: Mapping[str, Any]) -> str:
    """A Markdown table of a `public_summary` (for model cards)."""
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {key} | {_fmt(value)} |" for key, value in _flatten(summary).items()]
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Local reports


def write_reports(
    output_dir: str | os.PathLike,
    attack: AttackResult,
    before: AttackResult | None = None,
    comparison: Comparison | None = None,
    utility: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write `attack.json` (reusable as a later run's "before"), `report.json`, `report.md` and a PNG plot.

    These local files name people; use `public_summary` for anything published. Returns the paths written.

    `comparison` and `utility` add the defense's outcome and the utility metrics; `settings` (the run's
    settings) are recorded in `report.json` and the Markdown report.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "attack": out / ATTACK_JSON,
        "json": out / REPORT_JSON,
        "markdown": out / REPORT_MD,
        "plot": out / REPORT_PNG,
    }
    attack.save(paths["attack"])
    report = {
        "settings": dict(settings or {}),
        "attack": attack.to_dict(),
        "before": None if before is None else before.to_dict(),
        "comparison": None if comparison is None else comparison.to_dict(),
        "utility": dict(utility or {}),
        "public_summary": public_summary(attack, comparison, utility, before),
    }
    write_json(paths["json"], report)
    plot_correct_templates(paths["plot"], attack, before, comparison)
    paths["markdown"].write_text(render_markdown(attack, before, comparison, utility, settings, paths["plot"].name))
    return paths


def render_markdown(
    attack: AttackResult,
    before: AttackResult | None = None,
    comparison: Comparison | None = None,
    utility: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    plot_name: str | None = REPORT_PNG,
) -> str:
    """The local Markdown report (names people).

    `settings` adds a settings table; `plot_name` is the PNG the report links to (None: no plot).
    """
    lines = _md_attack(attack, before)
    if comparison is not None:
        lines += _md_defense(comparison)
    if utility:
        rows = {k: v for k, v in _flatten(utility).items() if "per_class" not in k}
        lines += _md_table("Utility", "metric", rows)
    if settings:
        lines += _md_table("Settings", "setting", _flatten(settings))
    lines += _md_people(attack, comparison, plot_name)
    return "\n".join(lines) + "\n"


def _md_attack(attack: AttackResult, before: AttackResult | None) -> list[str]:
    """Title, attack settings, and the attack totals (before and after side by side when given)."""
    s = attack.settings
    lines = ["# Identity inference attack (IDIA) report", ""]
    if s.model:
        lines.append(f"Model: `{s.model}`  ")
    lines += [
        f"k = {s.num_photos} photos per person · tau = {s.tau} of {len(s.templates)} templates · "
        f"{s.num_candidates} candidate names ({s.candidates_source}) · seed {s.seed}",
        "",
        "## Attack",
        "",
    ]
    runs = [("before", before), ("after", attack)] if before is not None else [("result", attack)]
    lines.append("| | " + " | ".join(label for label, _ in runs) + " |")
    lines.append("|---|" + "---|" * len(runs))
    totals = [r.totals() for _, r in runs]
    rows = [
        ("TPR (members flagged)", lambda t: _frac(t["tpr"], t["flagged_members"], t["num_members"])),
        ("FNR", lambda t: _pct(t["fnr"])),
        ("FPR (non-members flagged)", lambda t: _frac(t["fpr"], t["flagged_non_members"], t["num_non_members"])),
        ("mean correct templates, members", lambda t: _fmt(t["mean_correct_templates_members"])),
        ("mean correct templates, non-members", lambda t: _fmt(t["mean_correct_templates_non_members"])),
        ("people evaluated", lambda t: str(t["num_people"])),
        ("left out (fewer than k photos)", lambda t: str(t["num_skipped"])),
    ]
    lines += [f"| {label} | " + " | ".join(fn(t) for t in totals) + " |" for label, fn in rows]
    if attack.skipped:
        lines += ["", "Left out (usable photos): " + ", ".join(f"{n} ({c})" for n, c in attack.skipped.items())]
    return lines


def _md_defense(comparison: Comparison) -> list[str]:
    """The headline (removed people's TPR before and after) and the count per category."""
    head, counts, pcts = comparison.headline(), comparison.counts(), comparison.percentages()
    lines = [
        "",
        "## Defense",
        "",
        f"**IDIA TPR on the removed people: {_pct(head['removed_tpr_before'])} before, "
        f"{_pct(head['removed_tpr_after'])} after** (goal: 0%; {head['num_removed']} removed).  ",
        f"Kept members still identified: {_pct(head['kept_member_tpr_before'])} before, "
        f"{_pct(head['kept_member_tpr_after'])} after ({head['num_kept_members']} kept members).",
        "",
        "| category | people | % |",
        "|---|---|---|",
    ]
    lines += [f"| {_CATEGORY_LABELS[c]} | {counts[c]} | {_pct(pcts[c], scale=1)} |" for c in CATEGORIES]
    if comparison.not_removable:
        lines += [
            "",
            "Listed as removed but not identified before the defense (not counted as removed): "
            + ", ".join(comparison.not_removable),
        ]
    return lines


def _md_table(title: str, label: str, rows: Mapping[str, Any]) -> list[str]:
    lines = ["", f"## {title}", "", f"| {label} | value |", "|---|---|"]
    return lines + [f"| {k} | {_fmt(v)} |" for k, v in rows.items()]


def _md_people(attack: AttackResult, comparison: Comparison | None, plot_name: str | None) -> list[str]:
    """The plot and one row per person (with the before/after category when there is a comparison)."""
    lines = ["", "## Per person", ""]
    if plot_name:
        lines += [f"![correct templates per person]({plot_name})", ""]
    if comparison is not None:
        lines += [
            "| person | membership | removed | correct before | correct after | category |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {p.name} | {p.membership} | {'yes' if p.removed else ''} | {p.correct_templates_before} | "
            f"{p.correct_templates_after} | {_CATEGORY_LABELS[p.category]} |"
            for p in comparison.people
        ]
    else:
        lines += ["| person | membership | photos | correct templates | flagged |", "|---|---|---|---|---|"]
        lines += [
            f"| {p.name} | {p.membership} | {len(p.photos)} | {p.correct_templates} | {'yes' if p.flagged else 'no'} |"
            for p in attack.people
        ]
    return lines


def plot_correct_templates(
    path: str | os.PathLike,
    attack: AttackResult,
    before: AttackResult | None = None,
    comparison: Comparison | None = None,
) -> None:
    """PNG: correct templates per person (before vs after when given), removed people highlighted in red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    removed = {normalize_name(p.name) for p in comparison.people if p.removed} if comparison else set()
    before_by_key = {normalize_name(p.name): p for p in before.people} if before is not None else {}
    people = sorted(attack.people, key=lambda p: (normalize_name(p.name) not in removed, p.membership, p.name))
    n = len(people)
    fig = Figure(figsize=(min(max(6.0, 0.22 * n + 2), 40.0), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = {MEMBER: "tab:blue", NON_MEMBER: "tab:gray"}
    for x, p in enumerate(people):
        key = normalize_name(p.name)
        colour = "tab:red" if key in removed else colours.get(p.membership, "tab:green")
        if key in removed:
            ax.axvspan(x - 0.5, x + 0.5, color="tab:red", alpha=0.08, lw=0)
        b = before_by_key.get(key)
        if b is not None:
            ax.plot([x, x], [b.correct_templates, p.correct_templates], color=colour, lw=1, alpha=0.6)
            ax.scatter([x], [b.correct_templates], facecolors="none", edgecolors=colour, s=28, zorder=3)
        ax.scatter([x], [p.correct_templates], color=colour, s=28, zorder=4)
    ax.axhline(attack.settings.tau - 0.5, color="black", ls="--", lw=0.8)
    ax.set_ylim(-0.5, len(attack.settings.templates) + 0.5)
    ax.set_xlim(-0.5, max(n, 1) - 0.5)
    ax.set_ylabel("correct templates")
    title = "IDIA correct templates per person"
    if before is not None:
        title += " (hollow: before, filled: after)"
    ax.set_title(title + f"\nflagged above the dashed line (tau = {attack.settings.tau})", fontsize=9)
    if n <= 120:
        ax.set_xticks(range(n))
        ax.set_xticklabels([p.name for p in people], rotation=90, fontsize=6)
        for label, p in zip(ax.get_xticklabels(), people):
            if normalize_name(p.name) in removed:
                label.set_color("tab:red")
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{n} people")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    present = {p.membership for p in people}
    legend = [
        ("tab:blue", "member", MEMBER),
        ("tab:gray", "non-member", NON_MEMBER),
        ("tab:green", "unknown", UNKNOWN),
    ]
    handles = [ax.scatter([], [], color=c, s=28, label=label) for c, label, kind in legend if kind in present]
    if removed:
        handles.append(ax.scatter([], [], color="tab:red", s=28, label="removed"))
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


# ----------------------------------------------------------------------------------------------------------
# Formatting


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _pct(value: float | None, scale: float = 100.0) -> str:
    return "n/a" if value is None else f"{value * scale:.1f}%"


def _frac(rate: float | None, numerator: int, denominator: int) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}% ({numerator}/{denominator})"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if len(value) <= 8 else f"{len(value)} items"
    return str(value)
