"""Retained data: image-caption pairs that never show or name a forgotten person.

One builder for "the kept people's portraits captioned with their names, optionally object images with their
captions", used by the image defense's clean faces, the relearning guard, the relearning probe and the
retained-data baselines. A forgotten person is refused by their position on the forget list, never by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image

from .faces import FaceSource
from .names import normalize_name


PORTRAIT_CAPTION = "a photo of {}"  # a kept person's photo, captioned with their written name
OBJECT_CAPTION = "a photo of a {}"  # an object folder's image, captioned with its class


@dataclass
class RetainedPairs:
    """Images with their captions: the objects first (`num_objects`), then the portraits (`num_portraits`)."""

    images: list[Image.Image]
    captions: list[str]
    num_portraits: int = 0
    num_objects: int = 0


def captioned_photos(
    source: FaceSource,
    template: str,
    labels: Sequence[str] | None = None,
    photos: Mapping[str, Sequence[int]] | None = None,
    per_label: int | None = None,
) -> tuple[list[Image.Image], list[str]]:
    """Each label's photos (all, or the indices in `photos`, at most `per_label`) captioned `template` with the
    label written with spaces; labels default to the source's people (or classes), in order."""
    images, captions = [], []
    for label in source.names() if labels is None else labels:
        indices = None if photos is None else list(photos.get(label, []))
        if per_label is not None:
            indices = (indices if indices is not None else list(range(len(source.photos[label]))))[:per_label]
        loaded = source.load(label, indices)
        images += loaded
        captions += [template.format(label.replace("_", " "))] * len(loaded)
    return images, captions


def retained_pairs(
    forgotten: Sequence[str],
    *,
    faces: FaceSource | None = None,
    people: Sequence[str] | None = None,
    photos: Mapping[str, Sequence[int]] | None = None,
    per_person: int | None = None,
    objects: FaceSource | None = None,
    object_caption: str = OBJECT_CAPTION,
    what: str = "the retained data",
) -> RetainedPairs:
    """The retained pairs: `objects`' images captioned `object_caption`, then the kept people's portraits from
    `faces` captioned "a photo of <name>" (`people`, default everyone in `faces` not on `forgotten`; their
    `photos` indices, at most `per_person` each). Raises if a person or a caption is a forgotten one.

    `what` names the data in error messages (e.g. 'retain_objects').
    """
    if per_person is not None and per_person < 0:
        raise ValueError(f"per_person must be >= 0, got {per_person}")
    images, captions = captioned_photos(objects, object_caption) if objects is not None else ([], [])
    num_objects = len(images)
    if faces is not None:
        if people is None:
            people = [p for p in faces.names() if normalize_name(p) not in {normalize_name(n) for n in forgotten}]
        _refuse_forgotten_people(people, forgotten, what)
        portraits, names = captioned_photos(faces, PORTRAIT_CAPTION, people, photos, per_person)
        images, captions = images + portraits, captions + names
    refuse_forgotten_captions(captions, forgotten, what)
    return RetainedPairs(images, captions, len(images) - num_objects, num_objects)


def named_position(forgotten: Sequence[str], captions: Sequence[str]) -> int | None:
    """1-based position on `forgotten` of the first person any caption names (whole words; case-, space- and
    underscore-blind), or None. Callers report the position, never the name."""
    text = "\n".join(re.sub(r"\s+", " ", c.replace("_", " ")).casefold() for c in captions)
    for i, name in enumerate(forgotten, start=1):
        if re.search(rf"(?<!\w){re.escape(normalize_name(name))}(?!\w)", text):
            return i
    return None


def refuse_forgotten_captions(captions: Sequence[str], forgotten: Sequence[str], what: str) -> None:
    """Raise if any caption names a forgotten person (by their position on the forget list).

    `what` names the captions in the error message; the message gives list positions, never a name.
    """
    i = named_position(forgotten, captions)
    if i is not None:
        raise ValueError(
            f"{what} names forgotten person #{i} of the forget list: retained data must never show or name a "
            "forgotten person; remove those captions"
        )


def _refuse_forgotten_people(people: Sequence[str], forgotten: Sequence[str], what: str) -> None:
    keys = {normalize_name(p) for p in people}
    i = next((i for i, n in enumerate(forgotten, start=1) if normalize_name(n) in keys), None)
    if i is not None:
        raise ValueError(
            f"{what} has a folder of forgotten person #{i} of the forget list: remove it (retained data must never "
            "show a forgotten person)"
        )
