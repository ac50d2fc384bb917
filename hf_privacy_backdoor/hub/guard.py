"""Privacy guard: refuse (fail closed) when a forgotten name appears in anything about to leave the machine.

Both sides are compared in one normal form (`data.names.normal_form`): Unicode NFKC, casefolded, combining
marks removed ("é" = "e"), a few Latin letters folded to ASCII as slug functions do ("ø" = "o"), apostrophes
of every kind dropped, and every other run of characters that are not letters or digits one word boundary.

A name is found where a window of consecutive words of the scanned text concatenates to the name's parts in one
of these orders: all parts ("Jean-Luc Picard"), every part after the first then the first ("Picard, Jean-Luc"),
the last then the others, first + last and last + first (for names of three parts or more). So "jean-luc
picard", "jeanluc_picard", "JeanLucPicard", "PICARD, Jean-Luc" and "jean luc\\npicard" are all found, while a short
name never matches inside a longer word ("Al Li" does not hit "alliance"). Titles and suffixes on the list ("Dr.",
"Jr.") are dropped from the name first. In scripts written without spaces (Chinese, Japanese, Thai, ...) the name
is found inside a longer run of letters too.

What is scanned: every string that is sent (staged paths, repo id, branch, commit message, PR title) and every
staged file. A text file (UTF-8, or UTF-16 with a byte-order mark) is read whole, and also with its JSON escapes
(`\\u00e9`, `\\n`; JSON inside JSON too), URL-encoding (`%C3%A9`) and HTML entities decoded. Any other file is
read as raw bytes in overlapping chunks: where the name's first or last part appears (as written on the list or
in the normal form; in UTF-8, UTF-16 LE/BE, JSON-escaped or URL-encoded), the bytes around it are decoded every
way above and matched in the normal form, so names inside binary files (weights, pickles) are found too; there a
name of 6 letters or more is found even where binary noise next to it decodes as letters, a shorter one only
standing apart.

What it does not catch: initials ("A. Lovelace"), nicknames, a first or last name alone, transliterations into
another script, misspellings and, inside binary data only, letters spaced out or a spelling with more accents than
the list's ("Zoë" where the list has "Zoe"). Add such spellings to
the forget list (one a line) and the guard scans for them too. A hit says where and which entry of the forget list
(its 1-based position), never the name itself.
"""

from __future__ import annotations

import html
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from ..data.names import UNSPACED, name_parts, name_segments, normal_form


_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be")
_CHUNK = 64 * 2**20
_BYTES_PER_CHAR = 12  # the longest encoding of one character: a JSON escape (6 characters) in UTF-16
_UNBOUNDED_IN_BINARY = 6  # letters: from this length a name inside binary noise cannot be there by chance
_BREAKS = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]+")  # undecodable bytes, control codes
_JSON_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|[\"\\/bfnrt])")
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
Content = str | bytes | os.PathLike


class PublishError(ValueError):
    """Publishing was refused or failed. The message says why and what to do; it never holds a forgotten name."""


class PushFailed(PublishError):
    """The Hub did not take the push (unreachable, refused the token, an HTTP error): the same command may work later."""


@dataclass(frozen=True)
class NameHit:
    """A forgotten name found in `where` (a staged path or a described string); `index` is 1-based in the list."""

    where: str
    index: int

    def __str__(self) -> str:
        return f"entry #{self.index} of the forget list appears in {self.where}"


def name_orders(name: str) -> list[str]:
    """The concatenated normal forms searched for: all parts, the rest then the first, the last then the rest,
    first + last and last + first."""
    parts = ["".join(words) for words in name_parts(name)]
    if not parts:
        return []
    orders = [parts, parts[1:] + parts[:1], parts[-1:] + parts[:-1], [parts[0], parts[-1]], [parts[-1], parts[0]]]
    targets = {"".join(order) for order in orders} | {normal_form(name).replace(" ", "")}  # with its titles too
    return sorted(targets, key=len, reverse=True)


def _window_pattern(target: str, bounded: bool = True) -> str:
    """Regex over a normal form: `target` as a window of consecutive words (a space may fall between any two
    letters), starting and ending at word boundaries unless that end is in a script written without spaces (or
    `bounded` is False)."""
    body = " ?".join(re.escape(ch) for ch in target)
    start = "" if not bounded or UNSPACED.match(target[0]) else r"(?<!\S)"
    end = "" if not bounded or UNSPACED.match(target[-1]) else r"(?!\S)"
    return start + body + end


@dataclass(frozen=True)
class _Needle:
    """One name, compiled: the window regex over normal forms and the raw byte anchors of its longest part."""

    index: int
    pattern: re.Pattern
    in_binary: re.Pattern  # inside binary data a long name may touch noise that decodes as letters
    anchors: tuple[bytes, ...]
    window: int  # bytes decoded on each side of a raw anchor hit: more than any encoded spelling of the name

    @classmethod
    def build(cls, index: int, name: str) -> _Needle | None:
        targets = name_orders(name)
        if not targets:
            return None
        pattern = re.compile("|".join(_window_pattern(t) for t in targets))
        in_binary = re.compile("|".join(_window_pattern(t, bounded=len(t) < _UNBOUNDED_IN_BINARY) for t in targets))
        return cls(index, pattern, in_binary, tuple(sorted(_anchors(name))), _BYTES_PER_CHAR * (len(name) + 4))


def _text_hits(text: str, needles: Sequence[_Needle], skip: set[int] = frozenset(), binary: bool = False) -> set[int]:
    """Indices of the names (not in `skip`) found in `text`, in every decoded form of it (`binary`: a run of text
    decoded from binary data, where a name of 6 letters or more may touch other letters)."""
    forms = [normal_form(form) for form in decoded_forms(text)]
    pattern = "in_binary" if binary else "pattern"
    return {n.index for n in needles if n.index not in skip and any(getattr(n, pattern).search(f) for f in forms)}


def decoded_forms(text: str) -> list[str]:
    """`text` as written, and with its URL-encoding, JSON escapes (up to three levels: JSON inside JSON) and HTML
    entities decoded."""
    forms = [text]
    if "%" in text:
        forms.append(unquote(text, errors="replace"))
    for form in list(forms):
        for _ in range(3):
            if "\\" not in form or (unescaped := _json_unescape(form)) == form:
                break
            forms.append(form := unescaped)
    forms += [html.unescape(form) for form in forms if "&" in form]
    return forms


def _json_unescape(text: str) -> str:
    def one(match: re.Match) -> str:
        code = match.group(1)
        return chr(int(code[1:], 16)) if code[0] == "u" else _SIMPLE_ESCAPES.get(code, code)

    unescaped = _JSON_ESCAPE.sub(one, text)
    return unescaped.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # joins surrogate pairs


def _anchors(name: str) -> set[bytes]:
    """Raw byte forms (ASCII-lowered, like the searched bytes) of a part that every searched order holds (the
    first or the last, whichever is longer): its longest ASCII run as written (4 letters or more), its normal form
    and, if it has other letters, it as written in three cases and two compositions; each in every encoding,
    JSON-escaped and URL-encoded. Binary data is only decoded around them."""
    segments = name_segments(name)
    part = max((segments[0], segments[-1]), key=lambda p: len(normal_form(p)))
    written = unicodedata.normalize("NFC", part).casefold()
    normal = normal_form(part).replace(" ", "")
    texts = {normal, normal.upper(), normal.title()} if not normal.isascii() else {normal}
    if (ascii_runs := re.findall(r"[a-z0-9]+", written)) and len(longest_run := max(ascii_runs, key=len)) >= 4:
        texts.add(longest_run)  # "Nuñez" where the list has "Núñez"; a shorter run would hit binary noise often
    if not written.isascii():
        texts |= {
            unicodedata.normalize(f, c) for c in (written, written.upper(), written.title()) for f in ("NFC", "NFD")
        }
    forms = texts | {json.dumps(t)[1:-1] for t in texts} | {quote(t) for t in texts}
    encoded = sorted({f.encode(enc).lower() for f in forms for enc in _ENCODINGS}, key=len)
    return {a for i, a in enumerate(encoded) if not any(b in a for b in encoded[:i])}  # one that holds another is moot


def compile_names(names: Sequence[str]) -> list[_Needle]:
    """The searchers for `names`, compiled once for many scans (names that normalize to nothing are dropped)."""
    needles = [_Needle.build(i, n) for i, n in enumerate(names, start=1)]
    return [n for n in needles if n is not None]


def _raw_windows(data: bytes, needles: list[_Needle]) -> list[tuple[int, int]]:
    """Merged byte ranges around every raw anchor hit."""
    lowered = data.lower()
    spans = []
    for needle in needles:
        for anchor in needle.anchors:
            start = lowered.find(anchor)
            while start != -1:
                spans.append((max(0, start - needle.window), start + len(anchor) + needle.window))
                start = lowered.find(anchor, start + 1)
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _window_texts(window: bytes) -> list[str]:
    """A byte range decoded as UTF-8 and as UTF-16 LE/BE at both alignments, cut into runs of text at
    undecodable bytes and control codes (binary noise around a name is not part of its spelling)."""
    texts = [window.decode("utf-8", "replace")]
    texts += [window[shift:].decode(enc, "replace") for enc in ("utf-16-le", "utf-16-be") for shift in (0, 1)]
    return [run for text in texts for run in _BREAKS.split(text) if len(run) > 1]


def _bytes_hits(data: bytes, needles: list[_Needle], found: set[int]) -> set[int]:
    """Names found around the raw anchors of `data` (any file: text or binary)."""
    hits: set[int] = set()
    for lo, hi in _raw_windows(data, [n for n in needles if n.index not in found]):
        for text in _window_texts(data[lo:hi]):
            hits |= _text_hits(text, needles, found | hits, binary=True)
    return hits


def _as_text(data: bytes) -> str | None:
    """The text of a text file: UTF-8 (BOM or not), or UTF-16 with a BOM; None for anything else."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _file_hits(path: Path, needles: list[_Needle]) -> set[int]:
    """Indices of the names found in a file: a text file whole, anything else as raw bytes in overlapping chunks."""
    if path.stat().st_size <= _CHUNK and (text := _as_text(path.read_bytes())) is not None:
        return _text_hits(text, needles)
    found: set[int] = set()
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            window = tail + chunk
            found |= _bytes_hits(window, needles, found)
            tail = window[-2 * max((n.window for n in needles), default=1) :]
    return found


def _content_hits(content: Content, needles: list[_Needle]) -> set[int]:
    if isinstance(content, str):
        return _text_hits(content, needles)
    if isinstance(content, bytes):
        text = _as_text(content)
        return _bytes_hits(content, needles, set()) if text is None else _text_hits(text, needles)
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
        in_label = _text_hits(label, needles)
        hits += [NameHit(f"the path of item #{position}", i) for i in sorted(in_label)]
        where = f"item #{position}" if in_label else label
        hits += [NameHit(where, i) for i in sorted(_content_hits(content, needles))]
    return hits


def refuse_on_names(
    sources: Mapping[str, Content] | Iterable[os.PathLike | str | bytes], names: Sequence[str], what: str
) -> None:
    """Raise PublishError listing every hit (place and forget-list position, no name) if any name is found.

    `what` names the refused action in the error message (e.g. 'the push').
    """
    hits = scan_for_names(sources, names)
    if hits:
        listed = "\n".join(f"  - {hit}" for hit in hits)
        raise PublishError(
            f"privacy guard: refusing {what}: a forgotten name would be published (nothing was sent):\n{listed}\n"
            "Remove the name from those places (file, repo id, branch or commit message) and try again."
        )


def redact(text: str, names: Sequence[str]) -> str:
    """`text` with every line that holds a forgotten name (in any spelling the guard finds) withheld: for error
    messages and log lines that quote paths or server answers."""
    needles = compile_names(names)
    lines = []
    for line in text.split("\n"):
        hits = _text_hits(line, needles)
        entries = ", ".join(f"#{i}" for i in sorted(hits))
        lines.append(f"  [line withheld: it holds entry {entries} of the forget list]" if hits else line)
    return "\n".join(lines)
