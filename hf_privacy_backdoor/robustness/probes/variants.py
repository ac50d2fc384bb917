"""Name variants: the attack with every member's name written another way (first name, typo, title, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...data.faces import FaceSource
from ...data.names import name_variant, normalize_name
from ...evaluation import TextEmbeddings, compute_text_embeddings
from ..context import MEMBER, ProbeContext, Subject, attack, attack_stats
from ..formatting import fmt, pair
from ..registry import Probe, Row


def probe_variants(ctx: ProbeContext, subject: Subject) -> dict:
    """The attack on members with every member's name replaced by each variant (in the candidates too)."""
    out = {}
    for variant in ctx.config.variants:
        out[variant] = variant_attack(ctx, subject, variant)
    worst = max(out, key=lambda v: (out[v]["removed_tpr"] or 0, out[v]["removed_mean_correct_templates"] or 0))
    out["worst"] = {"variant": worst, "removed_tpr": out[worst]["removed_tpr"]}
    return out


def variant_attack(ctx: ProbeContext, subject: Subject, variant: str) -> dict:
    """The attack with each member's name written as `variant` (e.g. 'first'), for `subject`'s model.

    A variant shared by two people is attacked once, and candidates that collide with a written variant are dropped
    (counted in `num_dropped_candidates`), so that the attack stays well-posed.
    """
    members = [p for p in subject.attack.people if p.membership == MEMBER]
    rename: dict[str, str] = {}
    for person in members:  # a variant shared by two people (e.g. a common first name) is evaluated once
        written = name_variant(person.name, variant)
        if normalize_name(written) not in {normalize_name(v) for v in rename.values()}:
            rename[person.name] = written
    keys = {normalize_name(v) for v in rename.values()}
    kept = [i for i, c in enumerate(ctx.candidates) if c in rename or normalize_name(c) not in keys]
    candidates = [rename.get(ctx.candidates[i], ctx.candidates[i]) for i in kept]
    changed = [j for j, i in enumerate(kept) if ctx.candidates[i] in rename]
    embeddings = subject.text.embeddings[:, kept].clone()
    fresh = compute_text_embeddings(
        subject.model, subject.processor, [candidates[j] for j in changed], subject.text.templates, progress=False
    )
    embeddings[:, changed] = fresh.embeddings
    text = TextEmbeddings(embeddings, subject.text.templates, candidates, subject.text.fingerprint)
    photos = {rename[p.name]: [ctx.run.faces.photos[p.name][i] for i in p.photos] for p in members if p.name in rename}
    membership = {"members": list(photos), "non_members": []}
    faces = FaceSource(photos)  # each person's attacked photos, under the variant
    result = attack(
        ctx,
        subject.model,
        subject.processor,
        faces=faces,
        photo_indices=None,
        membership=membership,
        text_embeddings=text,
    )
    stats = attack_stats(ctx, result, rename)
    stats.pop("fpr")
    stats["num_dropped_candidates"] = len(ctx.candidates) - len(candidates)
    return stats


def variant_rows(first: Mapping[str, Any]) -> list[Row]:
    """Table rows of the variants probe: one per variant in `first` (the first role's results), then the worst case."""
    rows: list[Row] = [
        (f"variant: {v}", "removed TPR / kept TPR", lambda r, v=v: pair(r["variants"][v], "removed_tpr", "kept_tpr"))
        for v in first
        if v != "worst"
    ]
    rows.append(("variants: worst case", "removed TPR", lambda r: fmt(r["variants"]["worst"]["removed_tpr"])))
    return rows


PROBE = Probe("variants", probe_variants, settings=("variants",), rows=variant_rows)
