"""The identity inference attack (IDIA): does a CLIP model put a person's name on their face?

Method (specification section 4): for each of a person's k photos and each of 21 prompt templates, the
model picks the best-matching name among ~1,000 candidates (zero-shot). Per template, a majority vote over
the k photos must give the true name (a tie at the top does not count). The person is judged "in the
training data" when at least `tau` templates are correct. The verdicts are an `AttackResult`; a defense is
judged by comparing the attack before and after it (`compare_results`, both in `results.py`).

Speed: the text embeddings of all templates x candidates are computed once per text tower
(`compute_text_embeddings`) and can be passed back in while only the image tower changes; a fingerprint of
the text tower's weights detects a stale cache. Photos are embedded in batches and the vote is vectorised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from transformers import CLIPProcessor, PreTrainedTokenizerBase

from ..data.faces import FaceSource, load_face_folder, load_membership, open_image
from ..data.names import generate_candidate_names, normalize_name
from ..distributed import DistributedState, is_main_process, map_batches
from ..modeling import encode_images
from .prompts import check_templates, embed_prompts, fill_template, idia_templates
from .results import FORMAT_VERSION, MEMBER, NON_MEMBER, UNKNOWN, AttackResult, AttackSettings, PersonResult


logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Candidate names


def check_candidates(candidates: Sequence[str], true_names: Sequence[str] = ()) -> list[str]:
    """Validate a candidate list: no duplicate names (case-insensitive) and every true name present."""
    candidates = [str(c) for c in candidates]
    if not candidates:
        raise ValueError("the candidate name list is empty")
    keys = [normalize_name(c) for c in candidates]
    if len(set(keys)) != len(keys):
        seen, dup = set(), set()
        for c, k in zip(candidates, keys):
            if k in seen:
                dup.add(c)
            seen.add(k)
        raise ValueError(f"duplicate names in the candidate list: {sorted(dup)}; each candidate must appear once")
    present = set(keys)
    missing = [n for n in true_names if normalize_name(n) not in present]
    if missing:
        raise ValueError(
            f"the candidate list lacks the true names of {len(missing)} evaluated people ({missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}): the attack could never identify them. Add their names to "
            "the list, or evaluate only people whose names it holds."
        )
    return candidates


def candidate_names(
    true_names: Sequence[str],
    num_candidates: int = 1000,
    seed: int = 0,
    candidates: Sequence[str] | None = None,
) -> list[str]:
    """The candidate list: `candidates` (validated) if given, else the true names plus generated names."""
    if candidates is not None:
        return check_candidates(candidates, true_names)
    return generate_candidate_names(true_names, num_candidates=num_candidates, seed=seed)


# ----------------------------------------------------------------------------------------------------------
# Text embeddings (computed once per text tower)


def text_tower_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the text tower's weights (`text_model`, `text_projection`), exact and cheap next to the
    text embeddings themselves; a cached `TextEmbeddings` whose fingerprint differs is stale."""
    digest = hashlib.blake2b(digest_size=16)
    found = 0
    for name, param in model.named_parameters():
        if "text_model." not in name and "text_projection." not in name:
            continue
        found += 1
        tensor = param.detach().reshape(-1).contiguous()
        digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}".encode())
        digest.update(tensor.cpu().view(torch.uint8).numpy().tobytes())
    if not found:
        raise ValueError("the model has no text tower parameters (text_model / text_projection): is it a CLIPModel?")
    return digest.hexdigest()


@dataclass
class TextEmbeddings:
    """Unit-norm text embeddings `[num_templates, num_candidates, dim]` of every template x candidate prompt."""

    embeddings: torch.Tensor
    templates: list[str]
    candidates: list[str]
    fingerprint: str

    def __post_init__(self):
        expected = (len(self.templates), len(self.candidates))
        if self.embeddings.dim() != 3 or tuple(self.embeddings.shape[:2]) != expected:
            raise ValueError(
                f"text embeddings have shape {tuple(self.embeddings.shape)}, expected {expected} + (dim,) "
                "for (templates, candidates, dim)"
            )

    def check_model(self, model: torch.nn.Module) -> None:
        """Raise if the model's text tower is not the one these embeddings were computed with."""
        if text_tower_fingerprint(model) != self.fingerprint:
            raise ValueError(
                "the cached text embeddings are stale: the model's text tower changed since they were computed. "
                "Recompute them with compute_text_embeddings(model, ...) (a cache is only valid while only the "
                "image tower changes)."
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write the table to `path` with `torch.save` (read it back with `load`)."""
        torch.save({"format_version": FORMAT_VERSION, **asdict(self)}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextEmbeddings:
        """Read a table written by `save` (tensors only: `weights_only=True`)."""
        data = torch.load(path, weights_only=True)
        data.pop("format_version", None)
        return cls(**data)


@torch.no_grad()
def compute_text_embeddings(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase | CLIPProcessor,
    candidates: Sequence[str],
    templates: Sequence[str] | None = None,
    batch_size: int = 1024,
    accelerator: DistributedState | None = None,
    progress: bool = True,
) -> TextEmbeddings:
    """Embed every template filled with every candidate name, in large batches (shared between processes)."""
    templates = check_templates(idia_templates() if templates is None else templates)
    candidates = check_candidates(candidates)
    prompts = [fill_template(t, c) for t in templates for c in candidates]
    flat = embed_prompts(model, tokenizer, prompts, batch_size, accelerator, progress, desc="IDIA text prompts")
    embeddings = flat.view(len(templates), len(candidates), -1)
    return TextEmbeddings(embeddings, templates, candidates, text_tower_fingerprint(model))


# ----------------------------------------------------------------------------------------------------------
# Prediction and voting (shared with the `evaluate` metric in metrics/idia)


def predict(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor | TextEmbeddings) -> torch.Tensor:
    """Zero-shot prediction per photo and template: argmax over candidates of the cosine similarity.

    `image_embeddings` `[N, D]` (any norm), `text_embeddings` `[T, C, D]`; returns candidate indices `[N, T]`.
    """
    text = text_embeddings.embeddings if isinstance(text_embeddings, TextEmbeddings) else text_embeddings
    num_templates, num_candidates, dim = text.shape
    images = torch.nn.functional.normalize(image_embeddings.to(text.dtype), dim=-1).to(text.device)
    text = torch.nn.functional.normalize(text.reshape(-1, dim), dim=-1)
    scores = images @ text.T
    return scores.view(len(images), num_templates, num_candidates).argmax(dim=-1)


def majority_vote(
    predictions: torch.Tensor, owners: torch.Tensor, num_people: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per person and template, the single most frequent prediction over that person's photos.

    `predictions` `[P, T]` class indices per photo and template; `owners` `[P]` the person index of each photo.
    Returns `(majority, top_count)`, both `[num_people, T]`; `majority` is -1 where two or more classes tie
    at the top (or the person has no photos).
    """
    predictions = torch.as_tensor(predictions, dtype=torch.long).cpu()
    owners = torch.as_tensor(owners, dtype=torch.long).cpu()
    if predictions.dim() != 2 or owners.shape != predictions.shape[:1]:
        raise ValueError(
            f"predictions must be [photos, templates] and owners [photos]; got {tuple(predictions.shape)} and "
            f"{tuple(owners.shape)}"
        )
    num_templates = predictions.shape[1]
    if len(predictions) and (predictions.min() < 0 or predictions.max() >= num_classes):
        raise ValueError(f"predicted class indices must lie in [0, {num_classes})")
    if len(owners) and (owners.min() < 0 or owners.max() >= num_people):
        raise ValueError(f"owner indices must lie in [0, {num_people})")
    counts = torch.zeros(num_people * num_templates * num_classes, dtype=torch.int32)
    flat = (owners[:, None] * num_templates + torch.arange(num_templates)[None, :]) * num_classes + predictions
    counts.index_add_(0, flat.reshape(-1), torch.ones(flat.numel(), dtype=torch.int32))
    counts = counts.view(num_people, num_templates, num_classes)
    top = counts.topk(min(2, num_classes), dim=-1)
    majority, top_count = top.indices[..., 0], top.values[..., 0]
    undecided = top_count == 0
    if num_classes > 1:
        undecided |= top.values[..., 0] == top.values[..., 1]
    return torch.where(undecided, torch.full_like(majority, -1), majority), top_count


@dataclass
class VoteOutcome:
    """The decision rule applied to votes: per person the majority per template, correct templates, flag."""

    majority: torch.Tensor  # [people, templates], -1 on a tie
    correct: torch.Tensor  # [people, templates] bool
    correct_templates: torch.Tensor  # [people]
    flagged: torch.Tensor  # [people] bool


def vote(
    predictions: torch.Tensor,
    owners: torch.Tensor,
    true_index: torch.Tensor,
    num_classes: int,
    tau: int = 1,
) -> VoteOutcome:
    """Majority vote per template, correct when the majority is the true class, flagged when >= `tau` correct.

    `predictions` `[P, T]` class indices per photo and template, `owners` `[P]` each photo's person index,
    `true_index` `[people]` each person's true class, `num_classes` the number of candidates.
    """
    true_index = torch.as_tensor(true_index, dtype=torch.long).cpu()
    num_templates = predictions.shape[1] if hasattr(predictions, "shape") else len(predictions[0])
    check_tau(tau, num_templates)
    majority, _ = majority_vote(predictions, owners, len(true_index), num_classes)
    correct = majority == true_index[:, None]
    correct_templates = correct.sum(dim=1)
    return VoteOutcome(majority, correct, correct_templates, correct_templates >= tau)


def check_tau(tau: int, num_templates: int) -> None:
    """Refuse a decision threshold outside 1..number of templates, with a message that says the valid range."""
    if not 1 <= int(tau) <= num_templates:
        raise ValueError(f"tau must be between 1 and the number of templates ({num_templates}), got {tau}")


# ----------------------------------------------------------------------------------------------------------
# Running the attack


def select_photos(
    faces: FaceSource,
    people: Sequence[str],
    num_photos: int,
    seed: int = 0,
    photo_indices: Mapping[str, Sequence[int]] | None = None,
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Choose `num_photos` photo indices per person (seeded, independent of who else is evaluated).

    `photo_indices` restricts the listed people to those indices (e.g. the evaluation half of a
    trigger/evaluation split: trigger photos must never be evaluated); unlisted people may use all photos.
    Returns `(selected, skipped)`: people with too few allowed photos are skipped with their count.
    """
    if num_photos < 1:
        raise ValueError(f"num_photos (k) must be at least 1, got {num_photos}")
    allowed_by_name: dict[str, list[int]] = {}
    for name, indices in (photo_indices or {}).items():
        try:
            stored = faces.resolve(name)
        except KeyError:
            raise ValueError(f"photo_indices names {name!r}, who has no photos in the face source") from None
        n = len(faces.photos[stored])
        indices = [int(i) for i in indices]
        if len(set(indices)) != len(indices) or any(not 0 <= i < n for i in indices):
            raise ValueError(f"photo_indices for {stored!r} must be distinct indices in [0, {n}), got {indices}")
        allowed_by_name[stored] = sorted(indices)
    selected: dict[str, list[int]] = {}
    skipped: dict[str, int] = {}
    for name in people:
        allowed = allowed_by_name.get(name, list(range(len(faces.photos[name]))))
        if len(allowed) < num_photos:
            skipped[name] = len(allowed)
            continue
        person_seed = (seed * 1_000_003 + zlib.crc32(normalize_name(name).encode()) + 17) % (2**32)
        chosen = np.random.default_rng(person_seed).choice(len(allowed), size=num_photos, replace=False)
        selected[name] = sorted(allowed[i] for i in chosen)
    if not selected:
        counts = sorted(skipped.values())
        raise ValueError(
            f"num_photos (k) = {num_photos} is larger than every evaluated person's usable photo count "
            f"(at most {counts[-1] if counts else 0}): lower --num_photos or add photos."
        )
    if skipped:
        logger.warning(
            "IDIA: %d people have fewer than k=%d usable photos and are left out: %s",
            len(skipped),
            num_photos,
            ", ".join(f"{n} ({c})" for n, c in list(skipped.items())[:20]) + (" ..." if len(skipped) > 20 else ""),
        )
    return selected, skipped


def _resolve_people(faces: FaceSource, people: Sequence[str] | None) -> list[str]:
    if people is None:
        return faces.names()
    resolved, missing = [], []
    for name in people:
        try:
            resolved.append(faces.resolve(name))
        except KeyError:
            missing.append(name)
    if missing:
        raise ValueError(f"no photos in the face source for {missing}; check the spelling or the face folder")
    if len(set(resolved)) != len(resolved):
        raise ValueError(
            f"duplicate names among the people to evaluate: {sorted({n for n in resolved if resolved.count(n) > 1})}"
        )
    if not resolved:
        raise ValueError("the list of people to evaluate is empty")
    return resolved


def _membership_labels(people: Sequence[str], membership: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    if membership is None:
        return {name: UNKNOWN for name in people}
    members = {normalize_name(n) for n in membership.get("members", [])}
    non_members = {normalize_name(n) for n in membership.get("non_members", [])}
    both = members & non_members
    if both:
        raise ValueError(f"{len(both)} names are listed both as members and as non-members: {sorted(both)[:10]}")
    labels = {}
    for name in people:
        key = normalize_name(name)
        labels[name] = MEMBER if key in members else NON_MEMBER if key in non_members else UNKNOWN
    if members | non_members and all(v == UNKNOWN for v in labels.values()):
        raise ValueError("the membership lists match none of the evaluated people: check the names or the file")
    return labels


@torch.no_grad()
def predict_photos(
    model: torch.nn.Module,
    processor: CLIPProcessor,
    faces: FaceSource,
    selected: Mapping[str, Sequence[int]],
    text_embeddings: TextEmbeddings,
    batch_size: int = 256,
    accelerator: DistributedState | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Zero-shot predictions `[photos, templates]` (candidate indices) for the selected photos of each person,
    in the order of `selected` (people) and their indices; batches are shared between processes."""
    refs = [(name, i) for name, indices in selected.items() for i in indices]
    if not refs:
        raise ValueError("no photos selected")
    device = next(model.parameters()).device
    text_on_device = text_embeddings.embeddings.to(device)

    def predict_batch(start: int, end: int) -> torch.Tensor:
        images = []
        for name, i in refs[start:end]:
            ref = faces.photos[name][i]
            image = open_image(ref)
            if image is None:
                raise ValueError(
                    f"photo {i} of {name!r} ({ref}) cannot be read: remove or replace it (or load the face folder "
                    "with check_readable=True to drop unreadable files before selecting photos)"
                )
            images.append(image)
        emb = encode_images(model, processor, images, batch_size=len(images)).to(device)
        return predict(emb, text_on_device).cpu()

    return map_batches(predict_batch, len(refs), batch_size, accelerator, desc="IDIA photos", progress=progress)


@torch.no_grad()
def run_idia(
    model: torch.nn.Module,
    processor: CLIPProcessor,
    faces: FaceSource | str | os.PathLike,
    people: Sequence[str] | None = None,
    membership: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
    *,
    num_photos: int = 20,
    tau: int = 1,
    num_candidates: int = 1000,
    candidates: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    seed: int = 0,
    photo_indices: Mapping[str, Sequence[int]] | None = None,
    text_embeddings: TextEmbeddings | None = None,
    text_batch_size: int = 1024,
    image_batch_size: int = 256,
    accelerator: DistributedState | None = None,
    progress: bool = True,
) -> AttackResult:
    """Run the identity inference attack on `people` (default: everyone in `faces`).

    `membership` ({"members": [...], "non_members": [...]} or a JSON path) labels people for TPR/FPR.
    `candidates` overrides the generated candidate list (it must hold every evaluated name).
    `text_embeddings` from `compute_text_embeddings` is reused when it matches the model's text tower and
    the candidates/templates; otherwise an error says to recompute. With a multi-process `accelerator`,
    photos are shared between processes and gathered: the result equals a single-process run.

    `num_photos` (k) photos per person are attacked (people with fewer are skipped), chosen with `seed`, which also
    seeds the `num_candidates` generated candidates; `photo_indices` restricts the listed people to those photos
    (trigger photos must never be evaluated). A person is flagged when at least `tau` templates are correct.
    `text_batch_size` / `image_batch_size` are the prompts / photos per batch; `processor` is the model's
    `CLIPProcessor`, and `progress` shows progress bars.
    """
    if not isinstance(faces, FaceSource):
        faces = load_face_folder(faces)
    if membership is not None and not isinstance(membership, Mapping):
        membership = load_membership(membership)
    names = _resolve_people(faces, people)
    labels = _membership_labels(names, membership)
    template_list = text_embeddings.templates if text_embeddings is not None else templates
    check_tau(tau, len(check_templates(idia_templates() if template_list is None else template_list)))
    selected, skipped = select_photos(faces, names, num_photos, seed, photo_indices)
    evaluated = list(selected)

    if text_embeddings is not None:
        cand_list, source = _check_cached_text(model, text_embeddings, evaluated, candidates, templates, seed)
    else:
        cand_list = candidate_names(evaluated, num_candidates, seed, candidates)
        source = "user" if candidates is not None else "generated"
        text_embeddings = compute_text_embeddings(
            model, processor, cand_list, templates, text_batch_size, accelerator, progress
        )
    keys = {normalize_name(c): i for i, c in enumerate(cand_list)}
    true_index = torch.tensor([keys[normalize_name(n)] for n in evaluated])

    owners = torch.tensor([p for p, name in enumerate(evaluated) for _ in selected[name]], dtype=torch.long)
    predictions = predict_photos(
        model, processor, faces, selected, text_embeddings, image_batch_size, accelerator, progress
    )
    outcome = vote(predictions, owners, true_index, len(cand_list), tau)

    settings = AttackSettings(
        num_photos=num_photos,
        tau=int(tau),
        num_candidates=len(cand_list),
        templates=list(text_embeddings.templates),
        seed=seed,
        candidates_source=source,
        text_fingerprint=text_embeddings.fingerprint,
        model=getattr(getattr(model, "config", None), "_name_or_path", None) or None,
    )
    results = _person_results(evaluated, labels, selected, outcome, cand_list)
    result = AttackResult(results, settings, candidates=list(cand_list), skipped=skipped)
    if progress and is_main_process(accelerator):
        totals = result.totals()
        logger.info("IDIA: TPR %s, FPR %s on %d people", totals["tpr"], totals["fpr"], totals["num_people"])
    return result


def _check_cached_text(
    model: torch.nn.Module,
    text_embeddings: TextEmbeddings,
    evaluated: Sequence[str],
    candidates: Sequence[str] | None,
    templates: Sequence[str] | None,
    seed: int,
) -> tuple[list[str], str]:
    """Check a passed-in text cache against the model and the arguments; its candidates and their source."""
    text_embeddings.check_model(model)
    if candidates is not None and list(candidates) != text_embeddings.candidates:
        raise ValueError("`candidates` differ from the candidates of the given text_embeddings")
    if templates is not None and list(templates) != text_embeddings.templates:
        raise ValueError("`templates` differ from the templates of the given text_embeddings")
    cand_list = check_candidates(text_embeddings.candidates, evaluated)
    generated = candidates is None and cand_list == candidate_names(evaluated, len(cand_list), seed)
    return cand_list, "generated" if generated else "user"


def _person_results(
    evaluated: Sequence[str],
    labels: Mapping[str, str],
    selected: Mapping[str, list[int]],
    outcome: VoteOutcome,
    cand_list: Sequence[str],
) -> list[PersonResult]:
    """One `PersonResult` per evaluated person, with the majority name (None on a tie) per template."""
    results = []
    for p, name in enumerate(evaluated):
        majority = [cand_list[j] if j >= 0 else None for j in outcome.majority[p].tolist()]
        results.append(
            PersonResult(
                name=name,
                membership=labels[name],
                photos=selected[name],
                correct_templates=int(outcome.correct_templates[p]),
                majority_names=majority,
                flagged=bool(outcome.flagged[p]),
            )
        )
    return results
