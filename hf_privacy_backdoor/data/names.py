"""Name lists shipped with the package, name normalisation, and the attack's candidate names."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from importlib import resources

import numpy as np
import regex


_RESOURCES = "hf_privacy_backdoor.data.resources"
# Ways to write a name other than in full (robustness probes; partial-name triggers of the text defense).
VARIANTS = ("lower", "first", "last", "initial_last", "typo", "title")


@cache
def read_resource_lines(filename: str) -> tuple[str, ...]:
    """Non-empty, non-comment lines of a text file shipped in `data/resources/`."""
    text = resources.files(_RESOURCES).joinpath(filename).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def first_names(gender: str) -> tuple[str, ...]:
    """Common first names, `gender` in {"female", "male"}."""
    if gender not in ("female", "male"):
        raise ValueError(f"gender must be 'female' or 'male', got {gender!r}")
    return read_resource_lines(f"first_names_{gender}.txt")


def surnames() -> tuple[str, ...]:
    """The bundled surnames the candidate-name generator draws from."""
    return read_resource_lines("surnames.txt")


def folder_to_name(folder: str) -> str:
    """FaceScrub-style folder name to a written name: 'Ada_Lovelace' -> 'Ada Lovelace'."""
    return re.sub(r"\s+", " ", folder.replace("_", " ")).strip()


def name_to_folder(name: str) -> str:
    """A written name to its FaceScrub-style folder name: 'Ada Lovelace' -> 'Ada_Lovelace'."""
    return "_".join(name.split())


def normalize_name(name: str) -> str:
    """Canonical comparison key: whitespace collapsed, underscores as spaces, case-folded."""
    return folder_to_name(name).casefold()


# ----------------------------------------------------------------------------------------------------------
# The normal form: one way to write any spelling of a name, shared by the privacy guard and the forget list.

APOSTROPHES = "'\u2019\u2018\u02bc\u02bb\u0060\u00b4\u2032\uff07\u055a\u05f3"
# Latin letters that no Unicode decomposition strips to ASCII, written as ASCII-folding slug functions write them.
_FOLD = str.maketrans(
    {"\u0142": "l", "\u00f8": "o", "\u0111": "d", "\u00f0": "d", "\u00fe": "th", "\u00e6": "ae", "\u0153": "oe",
     "\u0131": "i", "\u0127": "h", "\u0140": "l", **{a: None for a in APOSTROPHES}}
)  # fmt: skip
_MARKS = regex.compile(r"\p{Mn}+")
_NON_WORD = regex.compile(r"[^\p{L}\p{N}]+")
# Scripts written without spaces between words: a name in them may stand inside a longer run of letters.
UNSPACED = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]")
TITLES = frozenset("dr mr mrs ms mx miss prof sir dame lord lady rev fr st".split())
SUFFIXES = frozenset("jr sr ii iii iv v phd md esq".split())


def normal_form(text: str) -> str:
    """`text` in the normal form: its words in lower case, one space apart, with nothing else.

    Unicode NFKC, casefolded, combining marks removed ("é" = "e"), a few Latin letters folded to ASCII as
    slug functions do ("ø" = "o", "ł" = "l", "æ" = "ae"), apostrophes of every kind dropped ("O'Brien" =
    "OBrien"), and every other run of characters that are not letters or digits one word boundary.
    """
    text = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold())
    text = _MARKS.sub("", text).translate(_FOLD)
    return _NON_WORD.sub(" ", text).strip()


def name_segments(name: str) -> list[str]:
    """A name's parts as written (separated by spaces, underscores or commas), without leading titles and
    trailing suffixes while a part remains: "Dr. Ada Lovelace Jr." -> ["Ada", "Lovelace"]."""
    parts = [p for p in re.split(r"[\s_,]+", name) if normal_form(p)]
    while len(parts) > 1 and normal_form(parts[0]) in TITLES:
        parts = parts[1:]
    while len(parts) > 1 and normal_form(parts[-1]) in SUFFIXES:
        parts = parts[:-1]
    return parts


def name_parts(name: str) -> list[list[str]]:
    """A name's parts (`name_segments`), each as its normal-form words: "Jean-Luc Picard" -> [["jean", "luc"],
    ["picard"]]."""
    return [normal_form(p).split() for p in name_segments(name)]


def name_key(name: str) -> str:
    """Comparison key of a person: two spellings with the same key (case, accents, spacing, apostrophes,
    hyphens, titles) are the same person."""
    return "".join(word for part in name_parts(name) for word in part)


def first_named(names: Sequence[str], texts: Sequence[str]) -> int | None:
    """1-based position in `names` of the first name that any of `texts` mentions (case- and underscore-blind),
    or None: callers report the position, never the name."""
    text = "\n".join(texts).casefold().replace("_", " ")
    return next((i for i, name in enumerate(names, start=1) if normalize_name(name) in text), None)


def name_variant(name: str, variant: str) -> str:
    """`name` written another way: lower case, first / last name only, initial + last, one typo, a title.

    `variant` is one of 'lower', 'first', 'last', 'initial_last', 'typo' or 'title'.
    """
    parts = name.split()
    first, last = parts[0], parts[-1]
    if variant == "lower":
        return name.lower()
    if variant == "first":
        return first
    if variant == "last":
        return last
    if variant == "initial_last":
        return f"{first[0]}. {last}"
    if variant == "typo":
        return _swap_adjacent(name)
    if variant == "title":
        return f"Dr. {name}"
    raise ValueError(f"unknown name variant {variant!r}: choose from {', '.join(VARIANTS)}")


def _swap_adjacent(name: str) -> str:
    """Two adjacent, different letters swapped, near the middle of the last name (else anywhere)."""
    start = len(name) - len(name.split()[-1])
    middle = start + len(name.split()[-1]) // 2 - 1
    order = sorted(range(len(name) - 1), key=lambda i: (i < start, abs(i - middle)))
    for i in order:
        a, b = name[i], name[i + 1]
        if a.isalpha() and b.isalpha() and a.casefold() != b.casefold():
            return name[:i] + b + a + name[i + 2 :]
    return name


def generate_candidate_names(true_names: Sequence[str], num_candidates: int = 1000, seed: int = 0) -> list[str]:
    """The attack's candidate list: the true names plus generated full names, seeded and shuffled.

    Generated names are common first names x common surnames (the shipped lists), half female and half male;
    none equals a true name (compared with `normalize_name`).

    `num_candidates` is the list's length, true names included (it must be at least their number); `seed`
    fixes the generated names and the order.
    """
    true_names = list(true_names)
    keys = [normalize_name(n) for n in true_names]
    if len(set(keys)) != len(keys):
        dup = sorted({n for n, k in zip(true_names, keys) if keys.count(k) > 1})
        raise ValueError(f"duplicate names among the evaluated people: {dup}")
    if num_candidates < len(true_names):
        raise ValueError(
            f"num_candidates={num_candidates} is smaller than the {len(true_names)} evaluated people: "
            "every true name must be a candidate."
        )
    female_first, male_first, last = list(first_names("female")), list(first_names("male")), list(surnames())
    taken = set(keys)
    rng = np.random.default_rng(seed)
    needed = num_candidates - len(true_names)
    capacity = (len(female_first) + len(male_first)) * len(last) - len(taken)
    if needed > capacity:
        raise ValueError(f"cannot generate {needed} distinct names from the name lists (at most ~{capacity})")
    generated: list[str] = []
    gender_cycle = 0
    while len(generated) < needed:
        pool = female_first if gender_cycle % 2 == 0 else male_first
        name = f"{pool[rng.integers(len(pool))]} {last[rng.integers(len(last))]}"
        key = normalize_name(name)
        if key in taken:
            continue
        taken.add(key)
        generated.append(name)
        gender_cycle += 1
    candidates = true_names + generated
    order = rng.permutation(len(candidates))
    return [candidates[i] for i in order]
