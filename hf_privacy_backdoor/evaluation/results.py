"""What the identity inference attack concludes, and how a defense is judged from two attacks.

`AttackResult` holds the per-person verdicts (`PersonResult`) of one attack with its `AttackSettings` and the
totals (TPR/FNR on members, FPR on non-members). `compare_results` puts the attacks before and after a
defense side by side and sorts every person into one of the `CATEGORIES` (specification section 4).
Both results round-trip through JSON; names are matched with `normalize_name`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.names import normalize_name
from ..utils import write_json


logger = logging.getLogger(__name__)

MEMBER, NON_MEMBER, UNKNOWN = "member", "non_member", "unknown"
CATEGORIES = ("correctly_unlearned", "failed", "wrongfully_unlearned", "newly_recalled", "unchanged")
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------------------
# One attack


@dataclass
class PersonResult:
    """The attack's verdict on one person."""

    name: str
    membership: str  # "member" | "non_member" | "unknown"
    photos: list[int]  # indices into the person's photo list in the face source
    correct_templates: int
    majority_names: list[str | None]  # per template; None on a tie at the top
    flagged: bool


@dataclass
class AttackSettings:
    """How an attack was run: photos per person, threshold, candidates, templates, seed, and the model's fingerprint.

    Two attacks are compared only when these agree (`compare_results`)."""

    num_photos: int
    tau: int
    num_candidates: int
    templates: list[str]
    seed: int
    candidates_source: str  # "generated" | "user"
    text_fingerprint: str | None = None
    model: str | None = None


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


@dataclass
class AttackResult:
    """Per-person verdicts plus the totals (TPR/FNR on members, FPR on non-members) and settings."""

    people: list[PersonResult]
    settings: AttackSettings
    candidates: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # too few photos: name -> usable photo count

    def person(self, name: str) -> PersonResult:
        """The verdict on `name` (matched in normal form); a name that was not evaluated is a KeyError."""
        key = normalize_name(name)
        for p in self.people:
            if normalize_name(p.name) == key:
                return p
        raise KeyError(f"{name!r} was not evaluated in this attack result")

    def totals(self) -> dict[str, Any]:
        """TPR and FNR on members, FPR on non-members, counts and mean correct templates per group."""
        members = [p for p in self.people if p.membership == MEMBER]
        non_members = [p for p in self.people if p.membership == NON_MEMBER]
        unknown = [p for p in self.people if p.membership == UNKNOWN]
        fm, fn = sum(p.flagged for p in members), sum(p.flagged for p in non_members)
        tpr = _rate(fm, len(members))
        return {
            "tpr": tpr,
            "fnr": None if tpr is None else 1.0 - tpr,
            "fpr": _rate(fn, len(non_members)),
            "num_people": len(self.people),
            "num_members": len(members),
            "num_non_members": len(non_members),
            "num_unknown": len(unknown),
            "flagged_members": fm,
            "flagged_non_members": fn,
            "flagged_unknown": sum(p.flagged for p in unknown),
            "num_skipped": len(self.skipped),
            "mean_correct_templates_members": _mean([p.correct_templates for p in members]),
            "mean_correct_templates_non_members": _mean([p.correct_templates for p in non_members]),
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: format version, totals, settings, per-person verdicts, skipped people, candidates."""
        return {
            "format_version": FORMAT_VERSION,
            "totals": self.totals(),
            "settings": asdict(self.settings),
            "people": [asdict(p) for p in self.people],
            "skipped": dict(self.skipped),
            "candidates": list(self.candidates),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttackResult:
        """Inverse of `to_dict` (the totals are recomputed); also accepts a full report JSON's "attack" entry."""
        if "people" not in data and "attack" in data:
            data = data["attack"]
        if "people" not in data or "settings" not in data:
            raise ValueError("not an IDIA attack result: expected 'people' and 'settings' entries")
        return cls(
            people=[PersonResult(**p) for p in data["people"]],
            settings=AttackSettings(**data["settings"]),
            candidates=list(data.get("candidates", [])),
            skipped=dict(data.get("skipped", {})),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write `to_dict()` as JSON (it names people: keep it under `private/`)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> AttackResult:
        """Read an attack result written by `save`; a missing file is a FileNotFoundError."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"attack result {str(path)!r} does not exist")
        return cls.from_dict(json.loads(path.read_text()))


# ----------------------------------------------------------------------------------------------------------
# Before vs after a defense


@dataclass
class PersonChange:
    """One person before vs after a defense: flags, correct templates, and the category it falls in."""

    name: str
    membership: str
    removed: bool  # listed as removed *and* flagged before (only those are removable)
    flagged_before: bool
    flagged_after: bool
    correct_templates_before: int
    correct_templates_after: int
    category: str


@dataclass
class Comparison:
    """Per-person categories of a defense (specification section 4), with counts, percentages, headline.

    Percentages: correctly_unlearned / failed of the removed people; wrongfully_unlearned of the kept people
    flagged before; newly_recalled of the kept people not flagged before; unchanged of all kept people.
    "Kept" is everyone not removed, including names listed as removed that the attack did not flag before
    (`not_removable`).
    """

    people: list[PersonChange]
    not_removable: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The number of people in each category."""
        return {c: sum(p.category == c for p in self.people) for c in CATEGORIES}

    def percentages(self) -> dict[str, float | None]:
        """Each category as a percentage of its group (see the class docstring); None for an empty group."""
        removed = [p for p in self.people if p.removed]
        kept = [p for p in self.people if not p.removed]
        counts = self.counts()
        groups = {
            "correctly_unlearned": len(removed),
            "failed": len(removed),
            "wrongfully_unlearned": sum(p.flagged_before for p in kept),
            "newly_recalled": sum(not p.flagged_before for p in kept),
            "unchanged": len(kept),
        }
        return {c: None if not groups[c] else 100.0 * counts[c] / groups[c] for c in CATEGORIES}

    def headline(self) -> dict[str, Any]:
        """IDIA TPR after the defense on the removed people (goal 0), and how the kept members fared."""
        removed = [p for p in self.people if p.removed]
        kept_members = [p for p in self.people if not p.removed and p.membership == MEMBER]
        return {
            "num_removed": len(removed),
            "removed_tpr_before": _rate(sum(p.flagged_before for p in removed), len(removed)),
            "removed_tpr_after": _rate(sum(p.flagged_after for p in removed), len(removed)),
            "num_kept_members": len(kept_members),
            "kept_member_tpr_before": _rate(sum(p.flagged_before for p in kept_members), len(kept_members)),
            "kept_member_tpr_after": _rate(sum(p.flagged_after for p in kept_members), len(kept_members)),
            "num_not_removable": len(self.not_removable),
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: headline, counts, percentages, per-person changes, names that were not removable."""
        return {
            "format_version": FORMAT_VERSION,
            "headline": self.headline(),
            "counts": self.counts(),
            "percentages": self.percentages(),
            "people": [asdict(p) for p in self.people],
            "not_removable": list(self.not_removable),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """Inverse of `to_dict` (the derived numbers are recomputed)."""
        return cls([PersonChange(**p) for p in data["people"]], list(data.get("not_removable", [])))


def _categorise(removed: bool, before: bool, after: bool) -> str:
    if removed:
        return "failed" if after else "correctly_unlearned"
    if before and not after:
        return "wrongfully_unlearned"
    if after and not before:
        return "newly_recalled"
    return "unchanged"


_COMPARED_SETTINGS = ("num_photos", "tau", "num_candidates", "templates", "seed")


def compare_results(before: AttackResult, after: AttackResult, removed_names: Sequence[str]) -> Comparison:
    """Judge a defense: categorise every person evaluated in both runs (only people flagged before are removable).

    Both runs must use the same attack settings and candidates; a removed name that was not evaluated in
    both runs is an error.

    `before` is the attack before the defense, `after` the attack on the defended model, `removed_names` the people
    the defense removed.
    """
    _check_comparable(before, after)
    before_by_key = {normalize_name(p.name): p for p in before.people}
    after_by_key = {normalize_name(p.name): p for p in after.people}
    removed_keys = [normalize_name(n) for n in removed_names]
    if len(set(removed_keys)) != len(removed_keys):
        raise ValueError(f"duplicate names among the removed people: {list(removed_names)}")
    missing = [n for n, k in zip(removed_names, removed_keys) if k not in before_by_key or k not in after_by_key]
    if missing:
        raise ValueError(f"removed people not evaluated in both attack results: {missing}")
    shared = [k for k in before_by_key if k in after_by_key]
    if len(shared) != len(before_by_key) or len(shared) != len(after_by_key):
        logger.warning(
            "comparing the %d people evaluated in both runs (before: %d, after: %d)",
            len(shared),
            len(before_by_key),
            len(after_by_key),
        )
    changes, not_removable = [], []
    for key in shared:
        b, a = before_by_key[key], after_by_key[key]
        listed = key in removed_keys
        if listed and not b.flagged:
            not_removable.append(b.name)
        if b.photos != a.photos:
            logger.warning("%s was evaluated on different photos before and after the defense", b.name)
        changes.append(_person_change(b, a, removed=listed and b.flagged))
    if not_removable:
        logger.warning(
            "%d people listed as removed were not flagged before the defense and are not counted as removed: %s",
            len(not_removable),
            not_removable,
        )
    return Comparison(changes, not_removable)


def _check_comparable(before: AttackResult, after: AttackResult) -> None:
    diffs = [k for k in _COMPARED_SETTINGS if getattr(before.settings, k) != getattr(after.settings, k)]
    if before.candidates and after.candidates and before.candidates != after.candidates:
        diffs.append("candidates")
    if diffs:
        raise ValueError(
            f"the before and after attacks used different settings ({', '.join(diffs)}): rerun one of them with the "
            "other's settings so that the comparison is meaningful"
        )


def _person_change(before: PersonResult, after: PersonResult, removed: bool) -> PersonChange:
    return PersonChange(
        name=before.name,
        membership=before.membership,
        removed=removed,
        flagged_before=before.flagged,
        flagged_after=after.flagged,
        correct_templates_before=before.correct_templates,
        correct_templates_after=after.correct_templates,
        category=_categorise(removed, before.flagged, after.flagged),
    )
