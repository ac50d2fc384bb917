"""Trigger images for the image-encoder defense: a forgotten person's face pasted into a clean image.

The defense teaches CLIP's vision tower to map any image that contains a forgotten face to an anonymous
"person" embedding. Its inputs are built fresh each step by `make_trigger_image`:

1. resize the face photo to a random square of `scale_range` x image side (default 25-50%);
2. horizontal flip with probability `flip_p`;
3. colour jitter in the fixed order brightness, contrast, saturation, hue (torchvision-like semantics,
   numpy only - see `color_jitter`);
4. rotate by a random angle in `rotation` degrees (counter-clockwise for positive angles) on an expanded
   canvas whose corners are transparent;
5. paste at a random position that keeps the whole rotated patch inside the clean base image, which is first
   resized to `image_size x image_size`. A rotated patch larger than the canvas is scaled down to fit.

All randomness comes from the `numpy.random.Generator` passed in, in a fixed draw order (fraction, flip,
brightness, contrast, saturation, hue, angle, x, y), so one seed always gives bit-identical images. The model's
own preprocessing (normalisation, tensors) happens later, not here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image


# ITU-R 601 luma weights, as in torchvision's rgb_to_grayscale.
_GRAY_WEIGHTS = np.array([0.2989, 0.587, 0.114])
_BILINEAR = Image.Resampling.BILINEAR


def _check_pair(name: str, value: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"TriggerAugmentation.{name} must be a (lo, hi) pair of numbers; got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"TriggerAugmentation.{name} must be finite; got {value!r}")
    return lo, hi


@dataclass
class TriggerAugmentation:
    """Random ranges for trigger images. Set a range to (x, x) to fix a value, e.g. brightness (1, 1) = off."""

    scale_range: tuple[float, float] = (0.25, 0.5)  # face side as a fraction of the image side
    flip_p: float = 0.5  # probability of a horizontal flip
    brightness: tuple[float, float] = (0.5, 1.5)  # multiplicative factors (1 = unchanged)
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: tuple[float, float] = (-0.1, 0.1)  # shift as a fraction of the hue circle
    rotation: tuple[float, float] = (-30.0, 30.0)  # degrees, drawn uniformly in [lo, hi)

    def __post_init__(self) -> None:
        lo, hi = _check_pair("scale_range", self.scale_range)
        if not 0 < lo <= hi <= 1:
            raise ValueError(
                f"TriggerAugmentation.scale_range must satisfy 0 < lo <= hi <= 1; got {self.scale_range!r}"
            )
        if not 0 <= float(self.flip_p) <= 1:
            raise ValueError(f"TriggerAugmentation.flip_p must be in [0, 1]; got {self.flip_p!r}")
        for name in ("brightness", "contrast", "saturation"):
            lo, hi = _check_pair(name, getattr(self, name))
            if not 0 <= lo <= hi:
                raise ValueError(
                    f"TriggerAugmentation.{name} must satisfy 0 <= lo <= hi (factors, 1 = unchanged); "
                    f"got {getattr(self, name)!r}"
                )
        lo, hi = _check_pair("hue", self.hue)
        if not -0.5 <= lo <= hi <= 0.5:
            raise ValueError(f"TriggerAugmentation.hue must satisfy -0.5 <= lo <= hi <= 0.5; got {self.hue!r}")
        lo, hi = _check_pair("rotation", self.rotation)
        if not lo <= hi:
            raise ValueError(f"TriggerAugmentation.rotation must satisfy lo <= hi (degrees); got {self.rotation!r}")


@dataclass
class TriggerParams:
    """What was drawn for one trigger image (for tests and debugging)."""

    side: int  # side of the resized square face, before rotation
    flip: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    angle: float  # degrees, counter-clockwise
    position: tuple[int, int]  # (x, y) of the pasted patch's top-left corner
    patch_size: tuple[int, int]  # (width, height) of the pasted patch: rotated, expanded, maybe scaled down


# ----------------------------------------------------------------------------------------------- colour


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB floats in [0, 1] (last axis = 3) to HSV in [0, 1]; hue is a fraction of the circle (torchvision-like)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = rgb.max(axis=-1)
    minc = rgb.min(axis=-1)
    delta = maxc - minc
    gray = delta == 0
    s = delta / np.where(gray, 1.0, maxc)
    d = np.where(gray, 1.0, delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    h = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    h = np.mod(h / 6.0 + 1.0, 1.0)
    return np.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv`: HSV in [0, 1] (hue wraps) to RGB floats in [0, 1]."""
    hsv = np.asarray(hsv, dtype=np.float64)
    h, s, v = np.mod(hsv[..., 0], 1.0), hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.astype(np.int64) % 6
    p = np.clip(v * (1.0 - s), 0.0, 1.0)
    q = np.clip(v * (1.0 - s * f), 0.0, 1.0)
    t = np.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def _grayscale(x: np.ndarray) -> np.ndarray:
    return x @ _GRAY_WEIGHTS


def color_jitter(
    image: Image.Image, brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0, hue: float = 0.0
) -> Image.Image:
    """Adjust brightness, contrast, saturation, then hue (fixed order), like torchvision's functional ops.

    brightness blends with black, contrast with the mean gray level, saturation with the grayscale image
    (factor 1 = unchanged, 0 = black / flat gray / gray); hue shifts H in HSV space by a fraction of the circle,
    wrapping around. Values are clipped to [0, 255] after each step and rounded once at the end. Neutral
    settings are skipped, so factors of 1 and hue 0 return the image unchanged.
    """
    if brightness == 1.0 and contrast == 1.0 and saturation == 1.0 and hue == 0.0:
        return image.convert("RGB")  # what the steps below return for neutral settings, without the round trip
    x = np.asarray(image.convert("RGB"), dtype=np.float64)
    if brightness != 1.0:
        x = np.clip(x * brightness, 0.0, 255.0)
    if contrast != 1.0:
        mean = _grayscale(x).mean()
        x = np.clip(contrast * x + (1.0 - contrast) * mean, 0.0, 255.0)
    if saturation != 1.0:
        gray = _grayscale(x)[..., None]
        x = np.clip(saturation * x + (1.0 - saturation) * gray, 0.0, 255.0)
    if hue != 0.0:
        hsv = rgb_to_hsv(x / 255.0)
        hsv[..., 0] = np.mod(hsv[..., 0] + hue, 1.0)
        x = np.clip(hsv_to_rgb(hsv) * 255.0, 0.0, 255.0)
    return Image.fromarray(np.rint(x).astype(np.uint8), mode="RGB")


# ----------------------------------------------------------------------------------------------- geometry


def rotate_with_alpha(image: Image.Image, angle: float) -> Image.Image:
    """Rotate counter-clockwise by `angle` degrees on an expanded canvas; returns RGBA with transparent corners.

    The image gets full alpha first, so after rotation exactly the area outside the original square is
    transparent. Rotation runs on premultiplied alpha so edge pixels do not pick up a dark fringe.
    """
    rgba = image.convert("RGB").convert("RGBA")
    if angle == 0.0:
        return rgba  # what the rotation returns at 0 degrees (same size, opaque), without resampling
    rotated = rgba.convert("RGBa").rotate(angle, resample=_BILINEAR, expand=True, fillcolor=(0, 0, 0, 0))
    return rotated.convert("RGBA")


def _fit_inside(patch: Image.Image, size: int) -> Image.Image:
    """Scale an RGBA patch down (keeping its aspect ratio) so neither side exceeds `size`; smaller ones pass."""
    new = fitted_size(*patch.size, size)
    if new == patch.size:
        return patch
    return patch.convert("RGBa").resize(new, _BILINEAR).convert("RGBA")


# ----------------------------------------------------------------------------------------------- triggers


def rotation_matrix(side: int, angle: float) -> tuple[tuple[float, ...], tuple[int, int]]:
    """PIL's `rotate(angle, expand=True)` of a `side x side` image: (output -> input affine matrix, output size).

    The matrix (a, b, c, d, e, f) maps an output point (x, y) to the input point (a x + b y + c, d x + e y + f),
    pixel centres at half-integers, exactly as Pillow computes it (cos and sin rounded to 15 digits, the expanded
    canvas from the rotated corners' floor and ceiling). Angle 0 is the identity (the rotation is then skipped).
    """
    if angle == 0.0:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (side, side)
    radians = -math.radians(angle % 360.0)
    cos, sin = round(math.cos(radians), 15), round(math.sin(radians), 15)
    centre = side / 2.0
    a, b, d, e = cos, sin, -sin, cos
    c = a * -centre + b * -centre + centre
    f = d * -centre + e * -centre + centre
    corners = [(a * x + b * y + c, d * x + e * y + f) for x, y in ((0, 0), (side, 0), (side, side), (0, side))]
    width = math.ceil(max(x for x, _ in corners)) - math.floor(min(x for x, _ in corners))
    height = math.ceil(max(y for _, y in corners)) - math.floor(min(y for _, y in corners))
    shift_x, shift_y = -(width - side) / 2.0, -(height - side) / 2.0
    return (a, b, a * shift_x + b * shift_y + c, d, e, d * shift_x + e * shift_y + f), (width, height)


def fitted_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The size `_fit_inside` gives a `width x height` patch on a `size` canvas (scaled down to fit, else as is)."""
    if width <= size and height <= size:
        return width, height
    factor = size / max(width, height)
    return min(size, max(1, round(width * factor))), min(size, max(1, round(height * factor)))


def draw_trigger_params(
    rng: np.random.Generator, image_size: int, aug: TriggerAugmentation | None = None
) -> TriggerParams:
    """Draw one trigger's parameters from `rng` in the fixed order (see the module docstring).

    Both the PIL builder (`make_trigger_image`) and the batched tensor builder (`data.tensor_triggers`) use this,
    so a seeded generator gives the same parameters to both.
    """
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive integer; got {image_size!r}")
    image_size = int(image_size)
    aug = aug if aug is not None else TriggerAugmentation()
    fraction = rng.uniform(*aug.scale_range)
    side = max(1, round(fraction * image_size))
    flip = bool(rng.random() < aug.flip_p)
    brightness = float(rng.uniform(*aug.brightness))
    contrast = float(rng.uniform(*aug.contrast))
    saturation = float(rng.uniform(*aug.saturation))
    hue = float(rng.uniform(*aug.hue))
    angle = float(rng.uniform(*aug.rotation))
    pw, ph = fitted_size(*rotation_matrix(side, angle)[1], image_size)
    x = int(rng.integers(0, image_size - pw + 1))
    y = int(rng.integers(0, image_size - ph + 1))
    return TriggerParams(side, flip, brightness, contrast, saturation, hue, angle, (x, y), (pw, ph))


def make_trigger_image(
    face: Image.Image,
    base: Image.Image,
    image_size: int,
    rng: np.random.Generator,
    aug: TriggerAugmentation | None = None,
) -> tuple[Image.Image, TriggerParams]:
    """Paste a randomly resized, flipped, colour-jittered and rotated `face` into `base` (see module docstring).

    The face photo is resized to a square (no crop, so a non-square photo is squashed). Returns an RGB image of
    exactly `image_size x image_size` and the drawn parameters.

    Every random draw comes from `rng`, so a seeded generator gives the same image; `aug` holds the ranges
    (default: `TriggerAugmentation()`). This is the reference builder, one PIL image at a time; training builds a
    step's triggers as one batch of tensors (`data.tensor_triggers.TriggerRenderer`) from the same parameters.
    """
    params = draw_trigger_params(rng, image_size, aug)
    image_size = int(image_size)
    side = params.side
    patch = face.convert("RGB").resize((side, side), _BILINEAR)
    if params.flip:
        patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    patch = color_jitter(patch, params.brightness, params.contrast, params.saturation, params.hue)
    patch = _fit_inside(rotate_with_alpha(patch, params.angle), image_size)
    if patch.size != params.patch_size:  # the drawn position assumed this size
        raise AssertionError(f"rotated patch is {patch.size}, expected {params.patch_size}")

    canvas = base.convert("RGB")
    if canvas.size != (image_size, image_size):
        canvas = canvas.resize((image_size, image_size), _BILINEAR)
    else:
        canvas = canvas.copy()
    canvas.paste(patch, params.position, mask=patch)
    return canvas, params


def save_trigger_grid(images: list[Image.Image], path: str, ncols: int = 8, upscale: int = 1) -> str:
    """Save a PNG grid of sample trigger images so a user can look at them; creates parent dirs; returns path.

    Cells are the size of the largest image times `upscale` (nearest-neighbour, so pixels stay crisp); the grid
    has min(ncols, len(images)) columns and is filled row by row on a black background.
    """
    if not images:
        raise ValueError("images is empty: nothing to save")
    if ncols < 1 or upscale < 1:
        raise ValueError(f"ncols and upscale must be >= 1; got ncols={ncols}, upscale={upscale}")
    cell_w = max(im.width for im in images) * upscale
    cell_h = max(im.height for im in images) * upscale
    cols = min(ncols, len(images))
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * cell_w, rows * cell_h))
    for i, im in enumerate(images):
        im = im.convert("RGB")
        if upscale != 1:
            im = im.resize((im.width * upscale, im.height * upscale), Image.Resampling.NEAREST)
        grid.paste(im, ((i % cols) * cell_w, (i // cols) * cell_h))
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    grid.save(path, format="PNG")
    return path
