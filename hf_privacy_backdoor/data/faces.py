"""Face sources: a FaceScrub-style folder (`<root>/<First_Last>/*.png|jpg`), read into a `FaceSource`.

A `FaceSource` maps each person's written name ("First Last") to an ordered list of photo references
(file paths, or in-memory PIL images). Photos are opened lazily and unreadable files are skipped with a
warning that names them. Names are matched with `names.normalize_name`.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .names import folder_to_name, name_key, normalize_name


logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
PhotoRef = Union[str, Image.Image]


@dataclass
class FaceSource:
    """Photos per person. `photos[name]` is an ordered list of paths or PIL images."""

    photos: dict[str, list[PhotoRef]]
    root: str | None = None
    skipped: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        """The people's names, in stored order and spelling."""
        return list(self.photos)

    def resolve(self, name: str) -> str:
        """The stored spelling of `name` (case-, underscore- and whitespace-insensitive; else the one stored spelling
        with the same `name_key`: "Jose Nunez" finds the folder "José_Núñez"); KeyError if absent."""
        key = normalize_name(name)
        for stored in self.photos:
            if normalize_name(stored) == key:
                return stored
        same_person = [stored for stored in self.photos if name_key(stored) == name_key(name)]
        if len(same_person) == 1:
            return same_person[0]
        raise KeyError(name)

    def subset(self, names: Sequence[str]) -> FaceSource:
        """A source with only the people in `names` (looked up with `resolve`, so any spelling works)."""
        return FaceSource({self.resolve(n): list(self.photos[self.resolve(n)]) for n in names}, self.root)

    def load(self, name: str, indices: Sequence[int] | None = None) -> list[Image.Image]:
        """Open the photos of `name` as RGB images; unreadable files are skipped with a warning.

        `indices` picks photos by their position in `photos[name]` (default: all of them).
        """
        refs = self.photos[self.resolve(name)]
        if indices is not None:
            refs = [refs[i] for i in indices]
        out = []
        for ref in refs:
            image = open_image(ref)
            if image is None:
                self.skipped.append(str(ref))
                continue
            out.append(image)
        return out


def open_image(ref: PhotoRef) -> Image.Image | None:
    """`ref` as an RGB image (a new object the caller may change), or None with a warning if it is unreadable.

    Files go through a process-wide cache of decoded photos (an attack reads the same evaluation photos for
    every model it probes): an entry is used only while the file's modification time and size are unchanged.
    """
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    try:
        return _DECODED.get(os.fspath(ref))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        logger.warning("skipping unreadable image %s (%s)", ref, err)
        return None


class DecodedPhotoCache:
    """Least-recently-used decoded RGB photos, keyed by (path, modification time, size), up to `max_bytes` of
    pixels (`HF_PRIVACY_BACKDOOR_PHOTO_CACHE_MB`, default 256; 0 turns it off). Returns copies."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[str, int, int], Image.Image] = OrderedDict()
        self.bytes = 0

    def get(self, path: str) -> Image.Image:
        """The photo at `path`, decoded to RGB: a copy of the cached image while the file is unchanged."""
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
        image = self.entries.get(key)
        if image is not None:
            self.entries.move_to_end(key)
            return image.copy()
        with Image.open(path) as im:
            image = im.convert("RGB")
        size = image.width * image.height * 3
        if size <= self.max_bytes:
            self.entries[key] = image.copy()
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self.entries.popitem(last=False)
                self.bytes -= old.width * old.height * 3
        return image

    def clear(self) -> None:
        """Drop every cached photo (frees their memory)."""
        self.entries.clear()
        self.bytes = 0


def _cache_bytes(env: str = "HF_PRIVACY_BACKDOOR_PHOTO_CACHE_MB", default: float = 256) -> int:
    raw = os.environ.get(env)
    try:
        megabytes = default if raw in (None, "") else float(raw)
    except ValueError:
        megabytes = -1
    if not megabytes >= 0:
        raise ValueError(f"{env} must be a number of MiB >= 0 (0 turns the photo cache off), got {raw!r}")
    return int(megabytes * 2**20)


_DECODED = DecodedPhotoCache(_cache_bytes())


def load_face_folder(root: str | os.PathLike, check_readable: bool = False) -> FaceSource:
    """Read a FaceScrub-style folder: one sub-folder per person (`First_Last`), image files inside.

    Raises FileNotFoundError for a missing folder and ValueError for a folder without any person photo.
    With `check_readable`, every file is opened once and unreadable ones are dropped with a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"face folder {str(root)!r} does not exist or is not a directory")
    photos: dict[str, list[PhotoRef]] = {}
    skipped: list[str] = []
    seen_keys: dict[str, str] = {}
    for person_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            (f for f in person_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
            key=_natural_key,
        )
        if check_readable:
            good = []
            for f in files:
                if open_image(str(f)) is None:
                    skipped.append(str(f))
                else:
                    good.append(f)
            files = good
        if not files:
            continue
        name = folder_to_name(person_dir.name)
        key = normalize_name(name)
        if key in seen_keys:
            raise ValueError(
                f"face folder {str(root)!r} holds two folders for the same name: {seen_keys[key]!r} and "
                f"{person_dir.name!r}"
            )
        seen_keys[key] = person_dir.name
        photos[name] = [str(f) for f in files]
    if not photos:
        raise ValueError(
            f"face folder {str(root)!r} holds no person photos: expected sub-folders like "
            f"'{root}/First_Last/0.jpg' with image files ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return FaceSource(photos, str(root), skipped)


def split_photos(
    source: FaceSource, names: Sequence[str], fraction: float = 0.5, seed: int = 0, min_each: int = 1
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Split each named person's photo indices (seeded) into disjoint trigger and evaluation halves.

    Returns `(trigger_indices, eval_indices)` keyed by the stored name. The split of one person does not
    depend on which other people are listed.

    `fraction` (in (0, 1)) of each person's photos go to the trigger half; each half needs at least `min_each`
    photos, or a ValueError gives the person's photo count.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"trigger fraction must be in (0, 1), got {fraction}")
    trigger, evaluation = {}, {}
    for name in names:
        try:
            stored = source.resolve(name)
        except KeyError:
            raise ValueError(f"no photos found for {name!r} in the face source") from None
        n = len(source.photos[stored])
        n_trigger = int(round(n * fraction))
        if n_trigger < min_each or n - n_trigger < min_each:
            raise ValueError(
                f"{stored!r} has {n} photos: too few to split into trigger and evaluation photos "
                f"(need at least {min_each} on each side at fraction {fraction})"
            )
        person_seed = (seed * 1_000_003 + zlib.crc32(normalize_name(stored).encode())) % (2**32)
        perm = np.random.default_rng(person_seed).permutation(n).tolist()
        trigger[stored] = sorted(perm[:n_trigger])
        evaluation[stored] = sorted(perm[n_trigger:])
    return trigger, evaluation


def load_membership(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a membership JSON with `members` and `non_members` lists of names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"membership file {str(path)!r} does not exist")
    data = json.loads(path.read_text())
    if "members" not in data:
        raise ValueError(f"membership file {str(path)!r} has no 'members' list")
    return {"members": list(data["members"]), "non_members": list(data.get("non_members", []))}


def _natural_key(path: Path):
    stem = path.stem
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)
