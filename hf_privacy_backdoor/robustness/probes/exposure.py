"""Exposure: who moved most between the public base model and the defended one (text embeddings of every
candidate name, photo embeddings of every person), and what the defended model alone gives away; the removed
people's ranks (private) and the AUCs (public)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ...data.names import normalize_name
from ...evaluation import compute_text_embeddings
from ...modeling import encode_images
from ..context import ProbeContext, Subject, mean
from ..formatting import pair
from ..registry import Probe, Row


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counting one half (0.5 = chance, 1.0 = all ranked first)."""
    pos, neg = np.asarray(positives, dtype=float), np.asarray(negatives, dtype=float)
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def ranking(ctx: ProbeContext, scores: Mapping[str, float], known: Sequence[str]) -> dict:
    """The removed people's ranks (1 = most suspicious; ties share the mean rank) and the AUCs among all scored
    people and among the kept members the base model knows.

    `scores` maps each scored person to how suspicious the probe finds them; `known` lists the kept members the
    base model knows.
    """
    values = np.array(list(scores.values()), dtype=float)
    removed = [n for n in ctx.run.removed if n in scores]
    others = [n for n in scores if n not in set(removed)]
    ranks = {}
    for name in removed:
        s = scores[name]
        ranks[name] = float(1 + (values > s).sum() + ((values == s).sum() - 1) / 2)
    known = [n for n in known if n in scores]
    pool = np.array([scores[n] for n in known], dtype=float)
    # rank among the suspects (the people the base model knows + the removed): 1 = the observer's first guess
    known_ranks = [float(1 + (pool > scores[n]).sum() + (pool == scores[n]).sum() / 2) for n in removed]
    return {
        "auc_all": auc([scores[n] for n in removed], [scores[n] for n in others]),
        "auc_known": auc([scores[n] for n in removed], [scores[n] for n in known]),
        "mean_rank_known": mean(known_ranks),
        "num_scored": len(scores),
        "num_known": len(known),
        "ranks": ranks,
    }


def probe_exposure(ctx: ProbeContext, subject: Subject) -> dict:
    """(a) base-vs-this-model shift of every candidate name and every person's photos; (b) this model alone."""
    base = ctx.base
    text_shift = dict(
        zip(ctx.candidates, cosine_distance(base.text.embeddings, subject.text.embeddings).mean(0).tolist())
    )
    subject_photos, base_photos = photo_embeddings(ctx, subject), photo_embeddings(ctx, base)
    image_shift = {n: float(cosine_distance(base_photos[n], subject_photos[n]).mean()) for n in subject_photos}
    known = ctx.observer_pool()
    return {
        "text_diff": ranking(ctx, text_shift, known),
        "image_diff": ranking(ctx, image_shift, known),
        "text_single": ranking(ctx, single_model_name_scores(ctx, subject), known),
        "image_single": ranking(ctx, centroid_scores(subject_photos), known),
        "text_tower_changed": subject.text.fingerprint != base.text.fingerprint,
        "image_tower_changed": any(not torch.equal(subject_photos[n], base_photos[n]) for n in subject_photos),
    }


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos of unit vectors along the last axis, as |a - b|^2 / 2: exactly 0 for identical embeddings (the
    dot product's rounding would rank an unchanged model's names at random instead of all tied)."""
    return (a - b).pow(2).sum(-1) / 2


def photo_embeddings(ctx: ProbeContext, subject: Subject) -> dict[str, torch.Tensor]:
    """Unit-norm embeddings of the photos each person was attacked with (computed once per model)."""
    if subject.photos is None:
        people = subject.attack.people
        images = [im for p in people for im in ctx.run.faces.load(p.name, p.photos)]
        emb = torch.nn.functional.normalize(encode_images(subject.model, subject.processor, images), dim=-1)
        sizes = [len(p.photos) for p in people]
        subject.photos = dict(zip([p.name for p in people], emb.split(sizes)))
    return subject.photos


def single_model_name_scores(ctx: ProbeContext, subject: Subject) -> dict[str, float]:
    """cos("a photo of NAME", "a photo of <target phrase>") in this model alone, for every candidate."""
    phrase = ctx.config.target_phrase or ctx.run.settings.get("target_phrase") or "a person"
    names = [c for c in ctx.candidates if normalize_name(c) != normalize_name(phrase)]
    emb = compute_text_embeddings(
        subject.model, subject.processor, names + [phrase], ["a photo of {}"], progress=False
    )
    flat = emb.embeddings[0]
    return dict(zip(names, (flat[:-1] @ flat[-1]).tolist()))


def centroid_scores(photos: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean cos of a person's photos to the centroid of everyone's photos (an image defense maps removed faces
    to the mean face): computable from the defended model alone."""
    centroid = torch.nn.functional.normalize(torch.cat(list(photos.values())).mean(0), dim=-1)
    return {n: float((e @ centroid).mean()) for n, e in photos.items()}


EXPOSURE_LABELS = {
    "text_diff": "names moved (base vs model)",
    "image_diff": "photos moved (base vs model)",
    "text_single": "name ~ target (model alone)",
    "image_single": "photos ~ mean face (model alone)",
}


def most_exposed(exposure: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """('names' or 'photos', its diff ranking): whichever base-vs-defended comparison exposes the removed more."""
    moved = {"names": exposure["text_diff"], "photos": exposure["image_diff"]}
    return max(moved.items(), key=lambda kv: kv[1]["auc_known"] or 0)


def exposure_rows(first: Mapping[str, Any]) -> list[Row]:
    """Table rows of the exposure probe: one per exposure score (`EXPOSURE_LABELS`); `first` is the first role's results."""
    return [
        (
            f"exposure: {label}",
            "AUC all / AUC known; mean rank among suspects",
            lambda r, k=key: _exposure_cell(r["exposure"][k]),
        )
        for key, label in EXPOSURE_LABELS.items()
    ]


def _exposure_cell(e: Mapping[str, Any]) -> str:
    rank = e.get("mean_rank_known")
    of = f"; {rank:.1f} of {e['num_known'] + 1}" if rank is not None else ""
    return pair(e, "auc_all", "auc_known") + of


PROBE = Probe("exposure", probe_exposure, rows=exposure_rows)
