"""Privacy guard: refuse (fail closed) when a forgotten name appears in anything about to leave the machine.

A name is searched case-insensitively with its parts joined by a space, `_`, `-`, `.`, `, ` or nothing, in
order, as first + last and reversed (last first); in every file's raw bytes (UTF-8 and UTF-16, so binary
files such as weights are covered too), in text files' decoded text, and in every string that is sent
(staged paths, repo id, branch, commit message). A hit says where and which entry of the forget list (its
1-based position), never the name itself.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote


SEPARATORS = (" ", "_", "-", ".", "", ", ")
_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be")
_CHUNK = 64 * 2**20
Content = str | bytes | os.PathLike


class PublishError(ValueError):
    """Publishing was refused or failed. The message says why and what to do; it never holds a forgotten name."""


@dataclass(frozen=True)
class NameHit:
    """A forgotten name found in `where` (a staged path or a described string); `index` is 1-based in the list."""

    where: str
    index: int

    def __str__(self) -> str:
        return f"entry #{self.index} of the forget list appears in {self.where}"


def name_variants(name: str) -> list[str]:
    """The casefolded spellings searched for: parts joined by each separator, in order, first+last, reversed."""
    parts = [p for p in re.split(r"[\s_\-.,]+", unicodedata.normalize("NFC", name).casefold()) if p]
    if not parts:
        return []
    orders = [parts, parts[::-1]]
    if len(parts) > 2:
        orders += [[parts[0], parts[-1]], [parts[-1], parts[0]]]
    return sorted({sep.join(order) for order in orders for sep in SEPARATORS}, key=len, reverse=True)


@dataclass(frozen=True)
class _Needle:
    """One name, compiled: text variants, byte patterns (ASCII-lowered) and a quick byte pre-filter."""

    index: int
    texts: tuple[str, ...]
    patterns: tuple[bytes, ...]
    prefilter: tuple[bytes, ...]

    @classmethod
    def build(cls, index: int, name: str) -> _Needle | None:
        texts = name_variants(name)
        if not texts:
            return None
        longest = max(re.split(r"[\s_\-.,]+", texts[0]), key=len)  # part of every variant: a cheap pre-filter
        patterns, prefilter = _byte_forms(texts), _byte_forms([longest])
        return cls(index, tuple(texts), tuple(sorted(patterns, key=len)), tuple(prefilter))

    def in_text(self, text: str) -> bool:
        folded = unicodedata.normalize("NFC", text).casefold()
        decoded = unicodedata.normalize("NFC", unquote(text)).casefold()
        return any(v in folded or v in decoded for v in self.texts)

    def in_bytes(self, lowered: bytes) -> bool:
        return any(p in lowered for p in self.prefilter) and any(p in lowered for p in self.patterns)


def _byte_forms(texts: Iterable[str]) -> set[bytes]:
    """Encoded spellings, ASCII-lowered like the searched bytes: as is, upper, title, NFD, JSON-escaped."""
    forms = {f for t in texts for f in (t, t.upper(), t.title())}
    forms |= {unicodedata.normalize("NFD", f) for f in forms}
    forms |= {json.dumps(f)[1:-1] for f in forms}  # JSON's \u escapes of non-ASCII letters
    return {f.encode(enc).lower() for f in forms for enc in _ENCODINGS}


def compile_names(names: Sequence[str]) -> list[_Needle]:
    needles = [_Needle.build(i, n) for i, n in enumerate(names, start=1)]
    return [n for n in needles if n is not None]


def _file_hits(path: Path, needles: list[_Needle]) -> set[int]:
    """Indices of the names found in a file: raw bytes in overlapping chunks, plus decoded text if it is text."""
    overlap = max((len(p) for n in needles for p in n.patterns), default=1)
    found: set[int] = set()
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            window = tail + chunk
            lowered = window.lower()
            found |= {n.index for n in needles if n.index not in found and n.in_bytes(lowered)}
            tail = window[-overlap:]
    if path.stat().st_size <= _CHUNK:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            return found
        found |= {n.index for n in needles if n.index not in found and n.in_text(text)}
    return found


def _content_hits(content: Content, needles: list[_Needle]) -> set[int]:
    if isinstance(content, str):
        return {n.index for n in needles if n.in_text(content)}
    if isinstance(content, bytes):
        lowered = content.lower()
        found = {n.index for n in needles if n.in_bytes(lowered)}
        try:
            return found | _content_hits(content.decode("utf-8"), needles)
        except UnicodeDecodeError:
            return found
    return _file_hits(Path(content), needles)


def _expand(sources: Mapping[str, Content] | Iterable[os.PathLike | str | bytes]) -> list[tuple[str, Content]]:
    """(label, content) pairs; folders become one pair per file, labelled by their path below the label."""
    if isinstance(sources, Mapping):
        items = list(sources.items())
    else:
        items = [(f"<bytes #{i}>", s) if isinstance(s, bytes) else (str(s), Path(s)) for i, s in enumerate(sources)]
    out: list[tuple[str, Content]] = []
    for label, content in items:
        if isinstance(content, os.PathLike) and Path(content).is_dir():
            root = Path(content)
            files = sorted(p for p in root.rglob("*") if p.is_file())
            out += [(f"{label.rstrip('/')}/{p.relative_to(root).as_posix()}", p) for p in files]
        else:
            out.append((label, content))
    return out


def scan_for_names(
    sources: Mapping[str, Content] | Iterable[os.PathLike | str | bytes], names: Sequence[str]
) -> list[NameHit]:
    """Every occurrence (one per place and name) of a forgotten name in `sources`.

    `sources` maps a label to its content: a `Path` (a file, or a folder: every file below it, each labelled by
    its path), `bytes`, or `str` (text). The label is searched as well (labels are staged paths). A plain
    iterable holds paths (str or Path) or bytes. Hits never quote the name, nor a label that contains one.
    """
    needles = compile_names(names)
    hits: list[NameHit] = []
    for position, (label, content) in enumerate(_expand(sources), start=1):
        in_label = {n.index for n in needles if n.in_text(label)}
        hits += [NameHit(f"the path of item #{position}", i) for i in sorted(in_label)]
        where = f"item #{position}" if in_label else label
        hits += [NameHit(where, i) for i in sorted(_content_hits(content, needles))]
    return hits


def refuse_on_names(
    sources: Mapping[str, Content] | Iterable[os.PathLike | str | bytes], names: Sequence[str], what: str
) -> None:
    """Raise PublishError listing every hit (place and forget-list position, no name) if any name is found."""
    hits = scan_for_names(sources, names)
    if hits:
        listed = "\n".join(f"  - {hit}" for hit in hits)
        raise PublishError(
            f"privacy guard: refusing {what}: a forgotten name would be published (nothing was sent):\n{listed}\n"
            "Remove the name from those places (file, repo id, branch or commit message) and try again."
        )
