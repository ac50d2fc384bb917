"""What every probe shares: the models under test (`Subject`), the run and its attack settings (`ProbeContext`),
the exact-name attack with the run's settings and its statistics."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import CLIPModel, CLIPProcessor

from ..data.names import generate_candidate_names
from ..evaluation import AttackResult, TextEmbeddings, compute_text_embeddings, run_idia
from .loading import RunFolder


if TYPE_CHECKING:
    from .config import RobustnessConfig


logger = logging.getLogger(__name__)

MEMBER = "member"


@dataclass
class Subject:
    """One model under test with its exact-name attack (the probes' shared starting point)."""

    role: str
    model: CLIPModel
    processor: CLIPProcessor
    text: TextEmbeddings  # over the context's candidates and the attack's templates
    attack: AttackResult
    photos: dict[str, torch.Tensor] | None = None  # unit-norm embeddings of each person's attacked photos


@dataclass
class ProbeContext:
    """The run, the settings, the attack's candidate list and the base model's results (shared by all roles)."""

    run: RunFolder
    config: RobustnessConfig
    candidates: list[str]
    num_photos: int
    tau: int
    seed: int
    base: Subject | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # what a probe computes once for every role (by key)

    def kept_members(self) -> list[str]:
        """The attack members the run did not remove, in the base attack's order (the kept-TPR population)."""
        removed = set(self.run.forgotten)
        return [p.name for p in self.base.attack.people if p.membership == MEMBER and p.name not in removed]

    def sharing_members(self) -> list[str]:
        """Kept members who share a first name or a surname with a removed person (the ones most at risk)."""
        parts = {w.casefold() for n in self.run.removed for w in (n.split()[0], n.split()[-1])}
        return [n for n in self.kept_members() if {n.split()[0].casefold(), n.split()[-1].casefold()} & parts]

    def known_members(self) -> list[str]:
        """Kept members the base model's attack flags: the people an adversary could tell apart from the removed."""
        kept = set(self.kept_members())
        return [p.name for p in self.base.attack.people if p.flagged and p.name in kept]

    def observer_pool(self) -> list[str]:
        """Whom an observer suspects besides the removed: the people the base model knows, cover people included
        (a name the base model never knew gives no cover: it is checked away)."""
        cover = set(self.run.cover)
        return self.known_members() + [p.name for p in self.base.attack.people if p.flagged and p.name in cover]


def make_context(run: RunFolder, config: RobustnessConfig) -> ProbeContext:
    """The attack settings (run's unless overridden) and the candidate list every probe shares."""
    num_photos = config.num_photos or run.num_photos
    num_candidates = config.num_candidates or run.num_candidates
    seed = run.seed if config.seed is None else config.seed
    evaluated = [n for n in run.faces.names() if len(run.split["eval"].get(n, run.faces.photos[n])) >= num_photos]
    missing = [i for i, n in enumerate(run.removed, start=1) if n not in evaluated]
    if missing:
        raise ValueError(f"removed person(s) #{missing} have fewer than {num_photos} evaluation photos")
    candidates = generate_candidate_names(evaluated, num_candidates=num_candidates, seed=seed)
    return ProbeContext(run, config, candidates, num_photos, config.tau or run.tau, seed)


def attack(ctx: ProbeContext, model, processor, **kwargs) -> AttackResult:
    """The IDIA with the run's settings on evaluation photos only (kwargs override, e.g. candidates)."""
    kwargs.setdefault("candidates", None if "text_embeddings" in kwargs else ctx.candidates)
    return run_idia(
        model,
        processor,
        kwargs.pop("faces", ctx.run.faces),
        membership=kwargs.pop("membership", ctx.run.membership),
        photo_indices=kwargs.pop("photo_indices", ctx.run.split["eval"]),
        num_photos=ctx.num_photos,
        tau=ctx.tau,
        seed=ctx.seed,
        progress=False,
        **kwargs,
    )


def make_subject(ctx: ProbeContext, role: str, model: CLIPModel, processor: CLIPProcessor) -> Subject:
    """One model under test in `role` ('defended', 'base', ...): put in eval mode, its candidate embeddings and its
    exact-name attack computed once for every probe.
    """
    model.eval()
    text = compute_text_embeddings(model, processor, ctx.candidates, progress=False)
    return Subject(role, model, processor, text, attack(ctx, model, processor, text_embeddings=text))


def attack_stats(ctx: ProbeContext, result: AttackResult, rename: Mapping[str, str] | None = None) -> dict:
    """Removed TPR, kept-member TPR, FPR and mean correct templates; per removed person under 'people'.

    `rename` maps a person's name to the name `result` holds them under (the variants probe's written forms).
    """
    rename = rename or {}
    by_name = {p.name: p for p in result.people}
    removed = [by_name[rename.get(n, n)] for n in ctx.run.removed if rename.get(n, n) in by_name]
    kept = [by_name[rename.get(n, n)] for n in ctx.kept_members() if rename.get(n, n) in by_name]
    sharing = [by_name[rename.get(n, n)] for n in ctx.sharing_members() if rename.get(n, n) in by_name]
    cover = [by_name[rename.get(n, n)] for n in ctx.run.cover if rename.get(n, n) in by_name]
    non_members = [p for p in result.people if p.membership == "non_member"]
    return {
        "removed_tpr": rate([p.flagged for p in removed]),
        "removed_mean_correct_templates": mean([p.correct_templates for p in removed]),
        "kept_tpr": rate([p.flagged for p in kept]),
        "kept_mean_correct_templates": mean([p.correct_templates for p in kept]),
        "fpr": rate([p.flagged for p in non_members]),
        "num_removed": len(removed),
        "num_kept": len(kept),
        # kept members sharing a first name or surname with a removed person, measured apart (None: nobody)
        "sharing_kept_tpr": rate([p.flagged for p in sharing]),
        "sharing_kept_mean_correct_templates": mean([p.correct_templates for p in sharing]),
        "num_sharing": len(sharing),
        "cover_tpr": rate([p.flagged for p in cover]),
        "num_cover": len(cover),
        "people": {
            n: by_name[rename.get(n, n)].correct_templates for n in ctx.run.removed if rename.get(n, n) in by_name
        },
    }


def rate(flags: Sequence[bool]) -> float | None:
    """The share of true `flags`, or None when there are none (a rate over nobody is not zero)."""
    return float(np.mean(flags)) if len(flags) else None


def mean(values: Sequence[float]) -> float | None:
    """The mean of `values`, or None when there are none."""
    return float(np.mean(values)) if len(values) else None


def log(ctx: ProbeContext, message: str) -> None:
    """Log a probe's progress when the config asks for it."""
    if ctx.config.progress:
        logger.info(message)
