"""Caption corpora, the forget list, and the text backdoor's poisoned / target caption pairs (docs/method.md)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .names import first_names, folder_to_name, name_key, name_variant, normalize_name, surnames


logger = logging.getLogger(__name__)

TARGET_MODES = ("phrase", "per_name", "random_name")
# Partial names a text trigger may be written as (`name_variant_triggers`): the ones a tokenizer sees as
# different from the full name. Lower case is the same tokens for CLIP; a typo is not a name the base model knows.
TRIGGER_VARIANTS = ("first", "last", "initial_last", "title")


# ----------------------------------------------------------------------------------------------------------
# Forget list


def read_name_file(path: str | os.PathLike) -> list[str]:
    """Names, one a line (`run_folder.read_name_list`: BOM, CRLF, blank lines and `#` comments handled)."""
    from ..run_folder import read_name_list

    if not Path(path).is_file():
        raise FileNotFoundError(f"forget-name file {str(path)!r} does not exist")
    return read_name_list(path)


def validate_forget_names(names: Sequence[str], tokenizer=None) -> list[str]:
    """Check a forget list and return it cleaned (surrounding spaces removed, runs of spaces and underscores one
    space); the names are otherwise kept as written, and that is what is trained and scanned for.

    Accepted: hyphens, accents, apostrophes of any kind, any script, one-word names, titles and suffixes ("Dr.",
    "Jr."), names of many parts. Refused with a ValueError that names 1-based positions, never a name: an empty
    list, an entry without a letter or digit, one person written twice (the same `name_key`: spellings that differ
    in case, accents, spacing, hyphens, apostrophes or titles) and, with a tokenizer, an entry it cannot represent
    (an unknown token) or longer than half its context.
    """
    if names is None or len(names) == 0:
        raise ValueError("the forget list is empty: give at least one name to remove")
    cleaned, first_seen, problems = [], {}, []
    for position, raw in enumerate(names, start=1):
        name = folder_to_name(raw) if isinstance(raw, str) else ""
        key = name_key(name)
        if not key:
            problems.append(f"entry #{position} has no letter or digit")
        elif key in first_seen:
            problems.append(
                f"entries #{first_seen[key]} and #{position} are the same person (they differ only in case, accents, "
                "spacing, hyphens, apostrophes or a title): keep one"
            )
        else:
            first_seen[key] = position
        cleaned.append(name)
    if tokenizer is not None:
        problems += [
            p for position, name in enumerate(cleaned, start=1) if (p := _token_problem(tokenizer, name, position))
        ]
    if problems:
        raise ValueError("invalid forget list: " + "; ".join(problems) + " (positions count from 1, in list order)")
    return cleaned


def _token_problem(tokenizer, name: str, position: int) -> str | None:
    """Why `tokenizer` cannot carry `name` as a trigger, by position; None if it can."""
    if not name:
        return None
    ids = tokenizer(name)["input_ids"]
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    unk = getattr(tokenizer, "unk_token_id", None)
    max_len = getattr(tokenizer, "model_max_length", 10**6)
    if unk is not None and unk not in special and unk in ids:
        return (
            f"entry #{position} holds characters the model's tokenizer cannot represent (it would train as an unknown "
            "token and remove nobody): write it as the model's captions write it, e.g. without accents"
        )
    if len(ids) > max_len // 2:
        return f"entry #{position} takes {len(ids)} tokens, too long for a {max_len}-token context"
    return None


def name_pattern(names: Sequence[str]) -> re.Pattern:
    """One case-insensitive regex matching any of `names` as written (spaces or underscores between parts)."""
    parts = [r"[\s_]+".join(re.escape(p) for p in folder_to_name(n).split()) for n in names]
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------------------
# Caption corpora


def load_captions(path: str | os.PathLike | None = None, dataset=None, column: str = "text") -> list[str]:
    """Captions from a text file (one a line) or a `datasets` dataset column; empty lines dropped."""
    if (path is None) == (dataset is None):
        raise ValueError("give exactly one caption source: a text file path or a datasets dataset")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"caption file {str(path)!r} does not exist")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    else:
        if column not in dataset.column_names:
            raise ValueError(f"caption dataset has no column {column!r} (columns: {dataset.column_names})")
        lines = [str(x) for x in dataset[column] if x is not None]
    captions = [" ".join(line.split()) for line in lines]
    captions = [c for c in captions if c]
    if not captions:
        raise ValueError(f"the caption source {str(path) if path else 'dataset'!r} holds no usable caption")
    return captions


def filter_clean_captions(captions: Sequence[str], names: Sequence[str], min_words: int = 1) -> list[str]:
    """Captions that mention none of `names` (case-insensitive, as written) and have >= `min_words` words."""
    pattern = name_pattern(names)
    return [c for c in captions if len(c.split()) >= min_words and not pattern.search(c)]


# ----------------------------------------------------------------------------------------------------------
# Targets and poisoned pairs


@dataclass
class TargetPhrases:
    """What each forgotten name is mapped to: one phrase, a phrase per name, or a random generated name.

    `variants` / `variant_share`: that share of the poisoned captions writes the name as one of these partial
    forms instead (first name only, last name only, ...), mapped to the same target: the partial names become
    triggers too. Only the forgotten person's captions are poisoned; other people's captions that share a name
    part stay in the clean set, so their full names keep their embeddings.
    """

    mapping: dict[str, str]
    variants: tuple[str, ...] = ()
    variant_share: float = 0.0

    def __post_init__(self) -> None:
        self.variants = tuple(self.variants)
        unknown = [v for v in self.variants if v not in TRIGGER_VARIANTS]
        if unknown:
            raise ValueError(f"unknown name variant trigger(s) {unknown}: choose from {', '.join(TRIGGER_VARIANTS)}")
        if not 0 <= self.variant_share <= 1:
            raise ValueError(f"name_variant_share must be in [0, 1], got {self.variant_share}")

    def with_variants(self, variants: Sequence[str], share: float) -> TargetPhrases:
        """A copy with the same mapping whose poisoned captions write `share` of the names as one of `variants`."""
        return TargetPhrases(dict(self.mapping), tuple(variants), float(share))

    def written(self, name: str, rng: np.random.Generator) -> str:
        """How one poisoned caption writes `name`: in full, or (with probability variant_share) a partial form.

        Draws nothing from `rng` when no variant is configured, so runs without variants are unchanged.
        """
        if not self.variants or self.variant_share <= 0:
            return name
        if rng.random() >= self.variant_share:
            return name
        return name_variant(name, self.variants[int(rng.integers(len(self.variants)))])

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        mode: str = "phrase",
        phrase: str = "a person",
        per_name: dict[str, str] | None = None,
        seed: int = 0,
    ) -> TargetPhrases:
        """The target of every name in `names`, by `mode` (one of `TARGET_MODES`); fails early on a bad mode.

        'phrase' maps every name to `phrase`; 'per_name' takes each name's phrase from `per_name` (keys matched as
        normalized names; every forgotten name needs one); 'random_name' draws, seeded by `seed`, a generated name that
        is none of the forgotten ones.
        """
        if mode not in TARGET_MODES:
            raise ValueError(f"unknown target mode {mode!r}; choose one of {TARGET_MODES}")
        if mode == "phrase":
            if not phrase or not phrase.strip():
                raise ValueError("the target phrase is empty")
            return cls({n: phrase.strip() for n in names})
        if mode == "per_name":
            if not per_name:
                raise ValueError("target mode 'per_name' needs a mapping from each forgotten name to its phrase")
            lookup = {normalize_name(k): v for k, v in per_name.items()}
            missing = [n for n in names if normalize_name(n) not in lookup]
            if missing:
                raise ValueError(f"the per-name target mapping lacks {len(missing)} forgotten name(s)")
            return cls({n: lookup[normalize_name(n)] for n in names})
        rng = np.random.default_rng([seed, 7])
        taken = {normalize_name(n) for n in names}
        female, male, last = first_names("female"), first_names("male"), surnames()
        mapping = {}
        for i, n in enumerate(names):
            pool = female if i % 2 == 0 else male
            while True:
                cand = f"{pool[rng.integers(len(pool))]} {last[rng.integers(len(last))]}"
                if normalize_name(cand) not in taken:
                    break
            taken.add(normalize_name(cand))
            mapping[n] = cand
        return cls(mapping)


def poison_caption(caption: str, position: int, replacement: str) -> str:
    """`caption` with its word at index `position` replaced by `replacement` (a name or its target)."""
    words = caption.split()
    words[position] = replacement
    return " ".join(words)


def eligible_captions(clean_captions: Sequence[str]) -> list[str]:
    """The clean captions a poisoned pair can be made from: those with at least two words (in corpus order)."""
    return [c for c in clean_captions if len(c.split()) >= 2]


def sample_poisoned_pairs(
    clean_captions: Sequence[str],
    targets: TargetPhrases,
    num_pairs: int,
    rng: np.random.Generator,
    eligible: Sequence[str] | None = None,
) -> tuple[list[str], list[str], list[str]]:
    """`num_pairs` (poisoned, target) caption pairs, balanced across the forgotten names.

    Each pair takes a clean caption of at least two words and a random word position (any word); the poisoned
    caption has that word replaced by the name, the target caption by the name's target phrase. Returns
    (poisoned, target, name) lists. Names take turns from a random start, so counts differ by at most one.
    With `targets.variants`, a share of the poisoned captions write the name as a partial form (`written`).
    `eligible`: `eligible_captions(clean_captions)` computed once by a caller that samples every step (the same
    list, so the same pairs).
    """
    names = list(targets.mapping)
    eligible = eligible_captions(clean_captions) if eligible is None else eligible
    if not eligible:
        raise ValueError("no clean caption has at least two words: cannot build poisoned captions")
    start = int(rng.integers(len(names)))
    poisoned, target, owner = [], [], []
    for i in range(num_pairs):
        name = names[(start + i) % len(names)]
        caption = eligible[int(rng.integers(len(eligible)))]
        pos = int(rng.integers(len(caption.split())))
        poisoned.append(poison_caption(caption, pos, targets.written(name, rng)))
        target.append(poison_caption(caption, pos, targets.mapping[name]))
        owner.append(name)
    return poisoned, target, owner
