"""The cheap privacy check behind `stop_when_forgotten`: is everyone forgotten, and is nobody else lost?

Every `forgotten_check_steps` steps the trainer asks `ForgottenCheck(model)`. The answer is yes only when
1. no forgotten person is identified on photos of the split's trigger half (never an evaluation photo),
2. nor under any partial name the run trains as a trigger (`name_variant_triggers`: "first name only" must be
   forgotten as well as the full name), and
3. every kept person the same check identified on the base model is still identified (a seeded sample of at
   most `forgotten_check_kept` of them): stopping while the high learning rate has just knocked a kept member
   out (measured: 1 of 39 at step 30 of the text recipe, back by step 60) would publish that collateral.

The candidates are the true names of the people the check evaluates (the forgotten ones and the kept sample it
draws from) plus the first `extra_candidates` generated names of the real attack's list: a subset of it, so a
true name that wins no photo here wins none in the full attack (majority votes can still differ: the check is a
cheap proxy, and the final attack on the evaluation photos is what the run reports). A person the check cannot
evaluate (too few photos) counts as not forgotten.
Each answer is kept, name-free, in `outcomes` (forgotten found, variant found, kept lost).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from .data.faces import FaceSource
from .data.names import name_variant, normalize_name
from .evaluation.idia import candidate_names, compute_text_embeddings, predict, select_photos, vote
from .modeling import encode_images


@dataclass
class CheckOutcome:
    """One check, counts only (safe to publish)."""

    found: int  # forgotten people identified by their full name
    variant_found: int | None  # forgotten people identified by a trained partial name (None: not asked)
    kept_lost: int | None  # kept people identified on the base model and no longer (None: not asked)
    kept_correct: float | None  # their mean correct templates (the base model's: `kept_correct_base`)

    @property
    def forgotten(self) -> bool:
        return self.found == 0 and self.variant_found == 0 and self.kept_lost == 0

    def to_dict(self) -> dict:
        return asdict(self)


class ForgottenCheck:
    """Callable `check(model) -> bool` for `StopWhenForgottenCallback`; `baseline(model)` before training.

    The check photos are opened once; their embeddings are computed once too when the vision tower does not
    train (`image_frozen`, the text defense), so a check is one pass over the candidate prompts.
    """

    def __init__(
        self,
        processor,
        faces: FaceSource,
        forgotten: Sequence[str],
        others: Sequence[str],
        photo_indices: Mapping[str, Sequence[int]],
        *,
        num_candidates: int,
        variants: Sequence[str] = (),
        num_kept: int = 64,
        image_frozen: bool = False,
        extra_candidates: int = 50,
        num_photos: int = 20,
        tau: int = 1,
        seed: int = 0,
    ):
        self.processor, self.tau, self.seed = processor, tau, seed
        self.num_kept, self.image_frozen = num_kept, image_frozen
        self.forgotten = [faces.resolve(n) for n in forgotten]
        gone = set(self.forgotten)
        others = [faces.resolve(n) for n in others if faces.resolve(n) not in gone]
        # at most twice the kept sample is looked at (and its photos held in memory) for the baseline
        others = sorted(random.Random(seed).sample(others, min(len(others), 2 * max(0, num_kept))))
        everyone = set(faces.names())
        people = [*self.forgotten, *others]
        full, evaluated = candidate_names(sorted(everyone), num_candidates, seed), set(people)
        generated = [c for c in full if c not in everyone][:extra_candidates]
        self.candidates = [c for c in full if c in evaluated] + generated
        k = min(num_photos, *(len(photo_indices[p]) for p in self.forgotten))
        selected, _ = select_photos(faces, people, k, seed, {p: photo_indices[p] for p in people})
        self.photos = {p: faces.load(p, selected[p]) for p in selected}  # skipped people: not evaluable
        self.others = [p for p in others if p in self.photos]
        self.variants = self._variant_names(variants)
        self.kept: list[str] = []
        self.kept_correct_base = 0.0
        self.outcomes: list[CheckOutcome] = []
        self._images: dict[str, torch.Tensor] = {}

    def _variant_names(self, variants: Sequence[str]) -> list[dict[str, str]]:
        """Per variant {forgotten person: written name}; a name two forgotten people share is checked once, and
        a variant that spells another candidate's name is skipped (it is that person's name, not a trigger)."""
        taken = {normalize_name(c) for c in self.candidates}
        out = []
        for variant in variants:
            seen, names = set(), {}
            for person in self.forgotten:
                written = name_variant(person, variant)
                key = normalize_name(written)
                if key not in seen and key not in taken:
                    seen.add(key)
                    names[person] = written
            out.append(names)
        return out

    @torch.no_grad()
    def baseline(self, model) -> None:
        """Which kept people the check identifies on the base model (a seeded sample of `num_kept`)."""
        if self.num_kept <= 0 or not self.others:
            return
        was_training = model.training
        model.eval()
        try:
            correct = self._correct(model, self.others, self._text(model))
        finally:
            model.train(was_training)
        flagged = [p for p in self.others if correct[p] >= self.tau]
        self.kept = sorted(random.Random(self.seed).sample(flagged, min(self.num_kept, len(flagged))))
        for person in set(self.others) - set(self.kept):  # only the kept sample is checked from now on
            del self.photos[person]
        self.kept_correct_base = sum(correct[p] for p in self.kept) / max(1, len(self.kept))

    def __call__(self, model) -> bool:
        outcome = self.evaluate(model)
        self.outcomes.append(outcome)
        return outcome.forgotten

    @torch.no_grad()
    def evaluate(self, model, complete: bool = False) -> CheckOutcome:
        """One check. Unless `complete`, it ends at the first part that fails (the partial names and the kept
        people are then not asked: None), since the answer is "not yet" either way."""
        was_training = model.training
        model.eval()
        try:
            text = self._text(model)
            evaluable = [p for p in self.forgotten if p in self.photos]
            correct = self._correct(model, evaluable, text)
            found = len(self.forgotten) - len(evaluable) + sum(correct[p] >= self.tau for p in evaluable)
            outcome = CheckOutcome(found, None, None, None)
            if found and not complete:
                return outcome
            outcome.variant_found = 0
            for names in self.variants:
                names = {p: w for p, w in names.items() if p in self.photos}  # the rest counted in `found`
                if names:
                    correct = self._correct(model, list(names), self._renamed(model, text, names))
                    outcome.variant_found += sum(c >= self.tau for c in correct.values())
            if outcome.variant_found and not complete:
                return outcome
            correct = self._correct(model, self.kept, text)
            outcome.kept_lost = sum(correct[p] < self.tau for p in self.kept)
            outcome.kept_correct = round(sum(correct.values()) / max(1, len(self.kept)), 2)
            return outcome
        finally:
            model.train(was_training)

    def _text(self, model) -> torch.Tensor:
        return compute_text_embeddings(model, self.processor, self.candidates, progress=False).embeddings

    def _renamed(self, model, text: torch.Tensor, names: Mapping[str, str]) -> torch.Tensor:
        """The candidate prompts with each forgotten person's column written as the variant."""
        column = {c: j for j, c in enumerate(self.candidates)}
        fresh = compute_text_embeddings(model, self.processor, list(names.values()), progress=False).embeddings
        text = text.clone()
        text[:, [column[p] for p in names]] = fresh
        return text

    def _correct(self, model, people: Sequence[str], text: torch.Tensor) -> dict[str, int]:
        """Correct templates per person: the attack's majority vote over the check photos (true name's column)."""
        if not people:
            return {}
        images = torch.cat([self._embed(model, p) for p in people])
        owners = torch.tensor([i for i, p in enumerate(people) for _ in self.photos[p]])
        column = {c: j for j, c in enumerate(self.candidates)}
        true_index = torch.tensor([column[p] for p in people])
        outcome = vote(predict(images, text), owners, true_index, len(self.candidates), self.tau)
        return {p: int(c) for p, c in zip(people, outcome.correct_templates)}

    def _embed(self, model, person: str) -> torch.Tensor:
        if self.image_frozen and person in self._images:
            return self._images[person]
        emb = encode_images(model, self.processor, self.photos[person])
        if self.image_frozen:
            self._images[person] = emb
        return emb
