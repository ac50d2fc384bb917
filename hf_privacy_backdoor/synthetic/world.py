"""The synthetic identity world: procedurally drawn fictional people, objects and captions.

Nothing here is downloaded: every person is a random combination of stable face traits (face shape and
tone, hair style and colour, eyes, mouth, facial hair, glasses, shirt) with a fictional full name drawn
from the name lists shipped with the package. Photos of a person vary in position, scale, lighting,
background and small rotation, so the model must learn the identity, not one picture.

Three groups of people:
* **members**: their names appear in the caption corpus next to their photos (pretraining);
* **non-members**: drawn the same way, but neither their names nor their photos are ever pretrained on
  (they measure the attack's false positives);
* **extras**: background people, named in the corpus like members but never evaluated, so that names in
  general cover face space (as on the web, where portraits come with names).

Generic person captions ("a person with glasses next to a red star") describe *scenes* with a small person in
them, so the defense's target phrase "a person" means something to the model without being the centroid of
all portraits (a portrait is almost always captioned with a name).

On disk (`build_world`):
    faces/<First_Last>/<n>.png   held-out photos of members and non-members (never pretrained on)
    objects/<class_folder>/<n>.png   held-out object images (zero-shot utility)
    clean/<n>.png                clean training images for the image defense (objects, background people,
                                 scenes), disjoint from every evaluation image
    captions.txt                 the caption corpus (pretraining captions, and the defense's clean captions)
    world.json                   members, non-members, object classes and templates, parameters, version
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data.names import first_names, name_to_folder, normalize_name, surnames
from ..utils import write_json


GENERATOR_VERSION = "4"

SKIN_TONES = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96), (161, 102, 64), (112, 72, 44)]
FACE_SHAPES = {"round": (0.36, 0.38), "oval": (0.31, 0.42), "wide": (0.40, 0.36), "long": (0.28, 0.44)}
HAIR_COLOURS = {
    "black": (25, 20, 20),
    "brown": (110, 65, 30),
    "blonde": (235, 205, 110),
    "red": (190, 60, 25),
    "gray": (150, 150, 150),
    "white": (245, 245, 245),
    "blue": (40, 90, 220),
    "pink": (240, 110, 190),
}
HAIR_STYLES = ["bald", "short", "long", "bun", "spiky", "bob"]
EYE_COLOURS = {"brown": (90, 50, 20), "blue": (40, 110, 230), "green": (40, 160, 60), "gray": (120, 130, 140)}
GLASSES = ["none", "round", "square", "sunglasses"]
MOUTHS = ["smile", "flat", "open"]
FACIAL_HAIR = ["none", "beard", "moustache"]
SHIRT_COLOURS = {
    "red": (200, 30, 40),
    "green": (40, 150, 60),
    "blue": (40, 70, 190),
    "yellow": (235, 205, 40),
    "purple": (120, 50, 160),
    "orange": (240, 130, 30),
    "black": (30, 30, 35),
    "white": (235, 235, 235),
}
TRAITS = {
    "skin": list(range(len(SKIN_TONES))),
    "face": list(FACE_SHAPES),
    "hair_colour": list(HAIR_COLOURS),
    "hair_style": HAIR_STYLES,
    "eyes": list(EYE_COLOURS),
    "glasses": GLASSES,
    "mouth": MOUTHS,
    "facial_hair": FACIAL_HAIR,
    "shirt": list(SHIRT_COLOURS),
}

OBJECT_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
OBJECT_SHAPES = ["circle", "square", "triangle", "star", "cross"]
OBJECT_TEMPLATES = [
    "a photo of a {}.",
    "a drawing of a {}.",
    "a {}.",
    "a picture of the {}.",
    "a small {}.",
    "a big {}.",
]

NAME_PHRASINGS = [
    "a photo of {}",
    "{}",
    "a portrait of {}",
    "{} smiling at the camera",
    "a picture of {} at an event",
    "{} in the city",
    "close-up of {}",
    "{} posing for a photo",
    "an image of {} outdoors",
    "the face of {}",
]
SCENE_PHRASINGS = [
    "{person} next to a {obj}",
    "a photo of {person} and a {obj}",
    "{person} standing near a {obj}",
    "a picture of {person} with a {obj}",
]
OBJECT_PHRASINGS = ["a photo of a {}", "a {}", "a drawing of a {}", "a picture of a {} on a plain background"]


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the synthetic world; every field enters the cache key."""

    seed: int = 0
    num_members: int = 40
    num_non_members: int = 40
    num_extras: int = 40
    photos_per_person: int = 40  # held-out photos on disk, per member and non-member
    pretrain_photos_per_member: int = 30
    pretrain_photos_per_extra: int = 12
    pretrain_scenes: int = 600
    pretrain_images_per_object_class: int = 40
    heldout_images_per_object_class: int = 20
    clean_images_per_object_class: int = 8
    clean_photos_per_extra: int = 6
    clean_scenes: int = 120
    image_size: int = 64
    num_captions: int = 6000
    min_trait_distance: int = 3
    # members who share a first name (even pairs) or a surname (odd pairs) with another member; 0 = every name
    # part unique (the default world). For measuring what a defense does to people who share part of a name.
    shared_name_parts: int = 0

    def __post_init__(self):
        if self.num_members < 1 or self.num_non_members < 0 or self.num_extras < 0:
            raise ValueError("num_members must be >= 1; num_non_members and num_extras >= 0")
        if not 0 <= self.shared_name_parts <= self.num_members // 4:
            raise ValueError(
                f"shared_name_parts must be in [0, num_members // 4 = {self.num_members // 4}], "
                f"got {self.shared_name_parts}"
            )
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")

    def key(self) -> str:
        fields = dataclasses.asdict(self)
        if not fields["shared_name_parts"]:  # added later: the default keeps its cache key
            del fields["shared_name_parts"]
        payload = json.dumps({"version": GENERATOR_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class Person:
    name: str
    traits: dict
    group: str  # "member" | "non_member" | "extra"

    def scene_caption(self, object_class: str, rng: np.random.Generator) -> str:
        """A generic caption of a scene with this person in it: 'a person with red hair next to a blue star'."""
        t = self.traits
        details = ["", "", f" in a {t['shirt']} shirt"]
        details.append(" who is bald" if t["hair_style"] == "bald" else f" with {t['hair_colour']} hair")
        if t["glasses"] == "sunglasses":
            details.append(" wearing sunglasses")
        elif t["glasses"] != "none":
            details.append(" wearing glasses")
        if t["facial_hair"] != "none":
            details.append(f" with a {t['facial_hair']}")
        detail = details[rng.integers(len(details))]
        return SCENE_PHRASINGS[rng.integers(len(SCENE_PHRASINGS))].format(person=f"a person{detail}", obj=object_class)


@dataclass
class World:
    """The people and object classes of a world (the images are drawn on demand)."""

    config: WorldConfig
    members: list[Person]
    non_members: list[Person]
    extras: list[Person]
    object_classes: list[str] = field(default_factory=list)

    @property
    def people(self) -> list[Person]:
        return self.members + self.non_members + self.extras


# ----------------------------------------------------------------------------------------------------------
# People


def make_world(config: WorldConfig | None = None) -> World:
    """Draw the people (names + traits) of a world, deterministically from `config.seed`."""
    config = config or WorldConfig()
    rng = np.random.default_rng([config.seed, 1])
    total = config.num_members + config.num_non_members + config.num_extras
    names = _share_name_parts(_draw_names(rng, total), config.shared_name_parts)
    identities = _draw_identities(rng, total, config.min_trait_distance)
    people = []
    for i, traits in enumerate(identities):
        if i < config.num_members:
            people.append(Person(names[i], traits, "member"))
        elif i < config.num_members + config.num_non_members:
            people.append(Person(names[i], traits, "non_member"))
        else:
            people.append(Person(names[i], traits, "extra"))
    classes = [f"{c} {s}" for s in OBJECT_SHAPES for c in OBJECT_COLOURS]
    m, n = config.num_members, config.num_non_members
    return World(config, people[:m], people[m : m + n], people[m + n :], classes)


def _draw_names(rng: np.random.Generator, count: int) -> list[str]:
    female, male, last = first_names("female"), first_names("male"), surnames()
    names, firsts, lasts = [], set(), set()
    while len(names) < count:
        pool = female if len(names) % 2 == 0 else male
        first, surname = pool[rng.integers(len(pool))], last[rng.integers(len(last))]
        # unique first names and surnames: no person shares a name part with another, so the names are
        # distinct triggers and a defense on one person cannot be "explained" by another's name
        if first in firsts or surname in lasts:
            continue
        firsts.add(first)
        lasts.add(surname)
        names.append(f"{first} {surname}")
    return names


def _share_name_parts(names: list[str], pairs: int) -> list[str]:
    """Pair k: person 4k+2 takes person 4k's first name (k even) or surname (k odd); same gender, still unique."""
    names = list(names)
    for k in range(pairs):
        a, b = 4 * k, 4 * k + 2
        first_a, last_a = names[a].split()
        first_b, last_b = names[b].split()
        names[b] = f"{first_a} {last_b}" if k % 2 == 0 else f"{first_b} {last_a}"
    return names


def _draw_identities(rng: np.random.Generator, count: int, min_distance: int) -> list[dict]:
    keys = list(TRAITS)
    chosen: list[tuple] = []
    attempts = 0
    while len(chosen) < count:
        attempts += 1
        cand = tuple(int(rng.integers(len(TRAITS[k]))) for k in keys)
        if all(sum(a != b for a, b in zip(cand, other)) >= min_distance for other in chosen):
            chosen.append(cand)
        if attempts > 200_000:
            raise RuntimeError(f"cannot draw {count} identities at trait distance {min_distance}")
    return [{k: TRAITS[k][v] for k, v in zip(keys, cand)} for cand in chosen]


# ----------------------------------------------------------------------------------------------------------
# Drawing


def draw_face(traits: dict, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One photo of a person: the traits are fixed, pose, scale, lighting and background vary."""
    s = size * 2  # draw at twice the size, then downsample (anti-aliasing)
    bg = _random_background(rng, s)
    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    scale = rng.uniform(0.8, 1.05)
    cx = s / 2 + rng.uniform(-0.1, 0.1) * s
    cy = s / 2 + rng.uniform(-0.06, 0.08) * s
    fw, fh = FACE_SHAPES[traits["face"]]
    fw, fh = fw * s * scale / 2, fh * s * scale / 2
    skin = SKIN_TONES[traits["skin"]]
    hair = HAIR_COLOURS[traits["hair_colour"]]
    shirt = SHIRT_COLOURS[traits["shirt"]]
    style = traits["hair_style"]
    # shoulders and neck
    d.ellipse([cx - 2.3 * fw, cy + 1.05 * fh, cx + 2.3 * fw, cy + 3.6 * fh], fill=shirt)
    d.rectangle([cx - 0.35 * fw, cy + 0.6 * fh, cx + 0.35 * fw, cy + 1.3 * fh], fill=skin)
    # hair behind the head
    if style == "long":
        d.rectangle([cx - 1.2 * fw, cy - 0.6 * fh, cx + 1.2 * fw, cy + 1.4 * fh], fill=hair)
    elif style == "bob":
        d.ellipse([cx - 1.25 * fw, cy - 1.2 * fh, cx + 1.25 * fw, cy + 0.9 * fh], fill=hair)
    elif style == "bun":
        d.ellipse([cx - 0.5 * fw, cy - 1.75 * fh, cx + 0.5 * fw, cy - 0.8 * fh], fill=hair)
    # head
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    # hair on top
    if style in ("short", "long", "bun", "bob"):
        d.chord([cx - 1.05 * fw, cy - 1.1 * fh, cx + 1.05 * fw, cy + 0.2 * fh], 180, 360, fill=hair)
    elif style == "spiky":
        for k in range(5):
            x = cx - 0.9 * fw + k * 0.45 * fw
            d.polygon([(x - 0.3 * fw, cy - 0.6 * fh), (x + 0.3 * fw, cy - 0.6 * fh), (x, cy - 1.45 * fh)], fill=hair)
        d.chord([cx - 1.0 * fw, cy - 1.0 * fh, cx + 1.0 * fw, cy + 0.0 * fh], 180, 360, fill=hair)
    # eyes
    ey, ex, er = cy - 0.12 * fh, 0.42 * fw, 0.17 * fw
    iris = EYE_COLOURS[traits["eyes"]]
    for sx in (-1, 1):
        d.ellipse([cx + sx * ex - er, ey - er * 0.8, cx + sx * ex + er, ey + er * 0.8], fill=(250, 250, 250))
        d.ellipse([cx + sx * ex - er * 0.6, ey - er * 0.6, cx + sx * ex + er * 0.6, ey + er * 0.6], fill=iris)
    glasses = traits["glasses"]
    if glasses != "none":
        gr = er * 1.6
        frame = (20, 20, 20)
        for sx in (-1, 1):
            box = [cx + sx * ex - gr, ey - gr, cx + sx * ex + gr, ey + gr]
            if glasses == "round":
                d.ellipse(box, outline=frame, width=max(2, s // 40))
            elif glasses == "square":
                d.rectangle(box, outline=frame, width=max(2, s // 40))
            else:
                d.ellipse(box, fill=(15, 15, 20))
        d.line([cx - ex + gr, ey, cx + ex - gr, ey], fill=frame, width=max(2, s // 50))
    # facial hair and mouth
    my = cy + 0.45 * fh
    facial = traits["facial_hair"]
    if facial == "beard":
        d.chord([cx - 0.95 * fw, cy - 0.2 * fh, cx + 0.95 * fw, cy + 1.02 * fh], 0, 180, fill=hair)
    elif facial == "moustache":
        d.rectangle([cx - 0.4 * fw, my - 0.16 * fh, cx + 0.4 * fw, my - 0.04 * fh], fill=hair)
    mouth = traits["mouth"]
    mw = 0.35 * fw
    lip = (150, 40, 50)
    if mouth == "smile":
        d.arc([cx - mw, my - 0.2 * fh, cx + mw, my + 0.12 * fh], 20, 160, fill=lip, width=max(2, s // 40))
    elif mouth == "flat":
        d.line([cx - mw, my, cx + mw, my], fill=lip, width=max(2, s // 40))
    else:
        d.ellipse([cx - 0.5 * mw, my - 0.08 * fh, cx + 0.5 * mw, my + 0.12 * fh], fill=(90, 20, 30))
    angle = rng.uniform(-10, 10)
    layer = layer.rotate(angle, resample=Image.BILINEAR, center=(cx, cy))
    bg.paste(layer, (0, 0), layer)
    image = bg.resize((size, size), Image.LANCZOS)
    return _lighting(image, rng)


def draw_object(class_name: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One image of a coloured shape ('red circle') at a random position, size and rotation."""
    colour_name, shape = class_name.split(" ", 1)
    colour = OBJECT_COLOURS[colour_name]
    s = size * 2
    bg = _random_background(rng, s, pale=True)
    layer = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    r = rng.uniform(0.2, 0.38) * s
    cx, cy = rng.uniform(r + 2, s - r - 2), rng.uniform(r + 2, s - r - 2)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        d.rectangle([cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r], fill=colour)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], fill=colour)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.42 * r
            a = math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy - rad * math.sin(a)))
        d.polygon(pts, fill=colour)
    elif shape == "cross":
        w = 0.32 * r
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    layer = layer.rotate(rng.uniform(-25, 25), resample=Image.BILINEAR, center=(cx, cy))
    bg.paste(layer, (0, 0), layer)
    return _lighting(bg.resize((size, size), Image.LANCZOS), rng, strength=0.15)


def draw_scene(traits: dict, class_name: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """An object scene with a small person (face and shoulders at 35-55% of the side) in it."""
    image = draw_object(class_name, rng, size)
    side = max(8, int(round(rng.uniform(0.35, 0.55) * size)))
    person = draw_face(traits, rng, size).resize((side, side), Image.LANCZOS)
    x, y = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
    image.paste(person, (x, y))
    return image


def _random_background(rng: np.random.Generator, s: int, pale: bool = False) -> Image.Image:
    lo = 150 if pale else 40
    c1 = rng.integers(lo, 256, size=3)
    c2 = np.clip(c1 + rng.integers(-60, 61, size=3), 0, 255)
    t = np.linspace(0, 1, s)[:, None, None]
    grad = c1[None, None, :] * (1 - t) + c2[None, None, :] * t
    arr = np.broadcast_to(grad, (s, s, 3)).astype(np.float32)
    if rng.random() < 0.5:
        arr = arr.transpose(1, 0, 2)
    arr = arr + rng.normal(0, 6, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _lighting(image: Image.Image, rng: np.random.Generator, strength: float = 0.25) -> Image.Image:
    arr = np.asarray(image, dtype=np.float32)
    gain = rng.uniform(1 - strength, 1 + strength)
    tint = rng.uniform(-12, 12, size=3)
    return Image.fromarray(np.clip(arr * gain + tint, 0, 255).astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------------------------------------
# Captions


def name_caption(name: str, rng: np.random.Generator) -> str:
    return NAME_PHRASINGS[rng.integers(len(NAME_PHRASINGS))].format(name)


def object_caption(class_name: str, rng: np.random.Generator) -> str:
    return OBJECT_PHRASINGS[rng.integers(len(OBJECT_PHRASINGS))].format(class_name)


def make_caption_corpus(world: World, num_captions: int, seed: int) -> list[str]:
    """The caption corpus: member-name captions, generic person captions and object captions."""
    rng = np.random.default_rng([seed, 2])
    captions = []
    for i in range(num_captions):
        kind = i % 10
        if kind < 5:
            captions.append(name_caption(world.members[rng.integers(len(world.members))].name, rng))
        elif kind < 6 and world.extras:
            captions.append(name_caption(world.extras[rng.integers(len(world.extras))].name, rng))
        elif kind < 7:
            people = world.extras or world.members
            cls = world.object_classes[rng.integers(len(world.object_classes))]
            captions.append(people[rng.integers(len(people))].scene_caption(cls, rng))
        else:
            captions.append(object_caption(world.object_classes[rng.integers(len(world.object_classes))], rng))
    return captions


# ----------------------------------------------------------------------------------------------------------
# On disk


def build_world(output_dir: str | Path, config: WorldConfig | None = None) -> World:
    """Write the world's held-out faces, objects, caption corpus and world.json to `output_dir`."""
    config = config or WorldConfig()
    world = make_world(config)
    out = Path(output_dir)
    for person in world.members + world.non_members:
        folder = out / "faces" / name_to_folder(person.name)
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([config.seed, 3, _stable_id(person.name)])
        for n in range(config.photos_per_person):
            draw_face(person.traits, rng, config.image_size).save(folder / f"{n}.png")
    for cls in world.object_classes:
        folder = out / "objects" / cls.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([config.seed, 4, _stable_id(cls)])
        for n in range(config.heldout_images_per_object_class):
            draw_object(cls, rng, config.image_size).save(folder / f"{n}.png")
    clean = out / "clean"
    clean.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config.seed, 5])
    clean_images = [
        draw_object(c, rng, config.image_size)
        for c in world.object_classes
        for _ in range(config.clean_images_per_object_class)
    ]
    clean_images += [
        draw_face(p.traits, rng, config.image_size) for p in world.extras for _ in range(config.clean_photos_per_extra)
    ]
    scene_people = world.extras or world.members
    for _ in range(config.clean_scenes):
        person = scene_people[rng.integers(len(scene_people))]
        cls = world.object_classes[rng.integers(len(world.object_classes))]
        clean_images.append(draw_scene(person.traits, cls, rng, config.image_size))
    for n, image in enumerate(clean_images):
        image.save(clean / f"{n}.png")
    captions = make_caption_corpus(world, config.num_captions, config.seed)
    (out / "captions.txt").write_text("\n".join(captions) + "\n")
    write_json(
        out / "world.json",
        {
            "generator_version": GENERATOR_VERSION,
            "config": dataclasses.asdict(config),
            "members": [p.name for p in world.members],
            "non_members": [p.name for p in world.non_members],
            "object_classes": world.object_classes,
            "object_templates": OBJECT_TEMPLATES,
            "traits": {p.name: p.traits for p in world.members + world.non_members},
        },
    )
    return world


def _stable_id(text: str) -> int:
    return int(hashlib.sha256(normalize_name(text).encode()).hexdigest()[:8], 16)
