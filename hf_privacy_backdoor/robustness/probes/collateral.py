"""Collateral: kept members wrongfully unlearned under other seeded candidate lists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...data.names import generate_candidate_names
from ...evaluation import AttackResult, compare_results
from ..context import ProbeContext, Subject, attack, attack_stats
from ..formatting import fmt
from ..registry import Probe, Row


def probe_collateral(ctx: ProbeContext, subject: Subject) -> dict:
    """Kept members wrongfully unlearned (flagged by the base, not by this model) under other candidate lists."""
    out = {}
    for seed in ctx.config.collateral_seeds:
        before = base_list_attack(ctx, seed)
        if subject is ctx.base:
            after = before
        else:
            after = attack(ctx, subject.model, subject.processor, candidates=before.candidates)
        out[f"seed_{seed}"] = _collateral_stats(ctx, before, after)
    return out


def base_list_attack(ctx: ProbeContext, seed: int) -> AttackResult:
    """The base model's attack with the candidate list seeded by `seed`, cached in `ctx` (shared by every role)."""
    lists = ctx.cache.setdefault("collateral_base_lists", {})
    if seed not in lists:
        evaluated = [p.name for p in ctx.base.attack.people]
        candidates = generate_candidate_names(evaluated, num_candidates=len(ctx.candidates), seed=seed)
        lists[seed] = attack(ctx, ctx.base.model, ctx.base.processor, candidates=candidates)
    return lists[seed]


def _collateral_stats(ctx: ProbeContext, before: AttackResult, after: AttackResult) -> dict:
    counts = compare_results(before, after, ctx.run.forgotten).counts()
    flagged_before = sum(p.flagged for p in before.people if p.name in set(ctx.kept_members()))
    stats = attack_stats(ctx, after)
    return {
        "wrongfully_unlearned": counts["wrongfully_unlearned"],
        "kept_flagged_before": flagged_before,
        "wrongfully_unlearned_share": counts["wrongfully_unlearned"] / flagged_before if flagged_before else None,
        "newly_recalled": counts["newly_recalled"],
        "removed_tpr": stats["removed_tpr"],
        "kept_tpr": stats["kept_tpr"],
        "people": stats["people"],
    }


def collateral_rows(first: Mapping[str, Any]) -> list[Row]:
    """Table rows of the collateral probe: one per candidate-list seed in `first` (the first role's results)."""
    return [
        (
            f"collateral: list {seed.split('_')[-1]}",
            "wrongfully unlearned / flagged before; removed TPR",
            lambda r, s=seed: _collateral_cell(r["collateral"][s]),
        )
        for seed in first
    ]


def _collateral_cell(c: Mapping[str, Any]) -> str:
    return f"{c['wrongfully_unlearned']}/{c['kept_flagged_before']}; {fmt(c['removed_tpr'])}"


PROBE = Probe("collateral", probe_collateral, settings=("collateral_seeds",), rows=collateral_rows)
