"""A step's trigger images built as one batch of tensors on the training device (no per-image PIL in the step).

`TriggerRenderer` holds the forgotten people's face photos and the clean backgrounds as 8-bit tensors, decoded
once (backgrounds resized to the model's side once, as `make_trigger_image` resizes them). `render(specs)` builds
every trigger of a step from the parameters `triggers.draw_trigger_params` drew (the same draws, in the same
order, as the PIL builder), in the PIL builder's order of operations:

1. each face at its square side: resized once per (photo, side) by Pillow, as the PIL builder does, and kept on
   the device (a run redraws the same photos at a handful of sides, so steps after the first few resize nothing);
   flipped by indexing, padded to a common side by repeating the edge;
2. colour jitter, batched: brightness, contrast (against the mean gray level of the patch itself), saturation,
   then hue through an RGB -> HSV -> RGB round trip; clipped after each step, rounded once;
3. rotation on the expanded canvas, the scale-down that fits a patch larger than the image, and the paste, as one
   `grid_sample` per batch: each background pixel is mapped back to the patch with Pillow's affine matrix
   (`triggers.rotation_matrix`), sampled bilinearly with the edge clamped, and taken where it falls inside the
   face square (Pillow's rotation leaves exactly those pixels opaque); rounded to 8 bits.

The result differs from the PIL builder only by the float arithmetic of the rotation and the colour jitter (measured in
`benchmarks/bench_speed.py --cases image_b32`; the tests bound it), except where a rotated patch is larger than the
image and is scaled down: Pillow resamples twice there (rotate, then resize with antialiasing), this once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .triggers import TriggerParams, rotation_matrix


_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as `triggers.color_jitter`


@dataclass(frozen=True)
class TriggerSpec:
    """One trigger of a step: whose face (photo index in their trigger photos), which background, what was drawn."""

    owner: str
    photo: int
    base: int  # index into the clean pool
    params: TriggerParams


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as an 8-bit tensor [3, H, W]."""
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def uint8_to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """8-bit tensors [N, 3, H, W] back to RGB PIL images (for the trigger preview and the tests)."""
    array = pixels.detach().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(a), mode="RGB") for a in array]


class TriggerRenderer:
    """Backgrounds decoded once, faces resized once per side; `render` builds a step's triggers as tensors [B, 3, S, S].

    `trigger_photos`: name -> face photos (PIL); `backgrounds`: the clean pool (PIL), indexed by `TriggerSpec.base`;
    `image_size`: the model's image side S; `device`: where the tensors live and the work runs. `preprocessor`
    (an `ImagePreprocessor` whose geometry is the identity at S x S): `render(specs, normalized=True)` then returns
    the model's pixel values directly (backgrounds kept normalised, only the pasted pixels looked up each step).
    Backgrounds stay on `device` while they take at most `budget_bytes`, else in CPU memory (moved per step);
    faces resized to a side are remembered up to `face_cache_bytes` (on `device`).
    """

    def __init__(
        self,
        trigger_photos: Mapping[str, Sequence[Image.Image]],
        backgrounds: Sequence[Image.Image],
        image_size: int,
        device: torch.device | str = "cpu",
        preprocessor=None,
        budget_bytes: int = 1 << 30,
        face_cache_bytes: int = 1 << 28,
    ):
        if int(image_size) != image_size or image_size < 1:
            raise ValueError(f"image_size must be a positive integer; got {image_size!r}")
        if not backgrounds:
            raise ValueError("no background images to paste faces into")
        self.image_size = size = int(image_size)
        self.device = torch.device(device)
        self.photos = {name: [p.convert("RGB") for p in photos] for name, photos in trigger_photos.items()}
        canvases = []
        for im in backgrounds:
            im = im.convert("RGB")
            canvases.append(pil_to_uint8(im if im.size == (size, size) else im.resize((size, size), Image.BILINEAR)))
        stacked = torch.stack(canvases)
        self.preprocessor = preprocessor
        self.backgrounds = self._place(stacked, budget_bytes)
        self.normalized_backgrounds = None
        if preprocessor is not None:
            self.normalized_backgrounds = self._place(preprocessor.normalize(stacked), budget_bytes)
        self.face_cache_bytes = int(face_cache_bytes)
        self._face_cache: dict[tuple[str, int, int], torch.Tensor] = {}
        self._face_cache_bytes = 0

    def _place(self, tensor: torch.Tensor, budget_bytes: int) -> torch.Tensor:
        if tensor.numel() * tensor.element_size() <= budget_bytes:
            return tensor.to(self.device)
        return tensor.pin_memory() if self.device.type == "cuda" else tensor

    # ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def render(self, specs: Sequence[TriggerSpec], normalized: bool = False) -> torch.Tensor:
        """The triggers of `specs` on the renderer's device: 8-bit pixels [B, 3, S, S], or with `normalized=True`
        the preprocessor's float32 pixel values (the same numbers the preprocessor gives the 8-bit images)."""
        if normalized and self.preprocessor is None:
            raise ValueError("normalized=True needs the renderer to be built with a preprocessor")
        size = self.image_size
        if not specs:
            dtype = torch.float32 if normalized else torch.uint8
            return torch.empty(0, 3, size, size, dtype=dtype, device=self.device)
        params = [s.params for s in specs]
        patches = self._jitter(self._patches(specs), params)  # [B, 3, P, P], values 0..255, edge-padded
        pasted, opaque = self._rotate(patches, params)  # [B, 3, H, W] rounded values, [B, 1, H, W] in the box
        index = torch.tensor([s.base for s in specs], device=self.backgrounds.device)
        if normalized:
            canvas = self.normalized_backgrounds[index].to(self.device, non_blocking=True)
            pasted = self.preprocessor.normalize(pasted.to(torch.uint8))
        else:
            canvas = self.backgrounds[index].to(self.device, non_blocking=True)
            pasted = pasted.to(torch.uint8)
        for i, p in enumerate(params):
            (x0, y0), (pw, ph) = p.position, p.patch_size
            region = canvas[i, :, y0 : y0 + ph, x0 : x0 + pw]
            region.copy_(torch.where(opaque[i, :, :ph, :pw], pasted[i, :, :ph, :pw], region))
        return canvas

    def _patches(self, specs: Sequence[TriggerSpec]) -> torch.Tensor:
        """Step 1: each face resized to its side (remembered per photo and side), flipped, edge-padded."""
        largest = max(s.params.side for s in specs)
        out = torch.empty(len(specs), 3, largest, largest, device=self.device)
        resized = self._resized_faces(specs)
        by_side: dict[int, list[int]] = {}
        for i, spec in enumerate(specs):
            by_side.setdefault(spec.params.side, []).append(i)
        for side, members in by_side.items():
            faces = torch.stack([resized[i] for i in members]).float()
            flips = torch.tensor([specs[i].params.flip for i in members], device=self.device)
            faces = torch.where(flips.view(-1, 1, 1, 1), faces.flip(-1), faces)
            if side < largest:
                faces = F.pad(faces, (0, largest - side, 0, largest - side), mode="replicate")
            out[members] = faces
        return out

    def _resized_faces(self, specs: Sequence[TriggerSpec]) -> list[torch.Tensor]:
        """Each spec's face at its side. A (photo, side) is resized once, by Pillow (the reference arithmetic,
        exactly), and kept on the device while the cache holds at most `face_cache_bytes`: a run redraws the same
        photos at a few sides, so after the first steps no step resizes anything."""
        keys = [(s.owner, s.photo, s.params.side) for s in specs]
        fresh = {}
        for key in dict.fromkeys(k for k in keys if k not in self._face_cache):
            owner, photo, side = key
            face = self.photos[owner][photo]
            face = pil_to_uint8(face.resize((side, side), Image.BILINEAR)).to(self.device)
            fresh[key] = face
            if self._face_cache_bytes + face.numel() <= self.face_cache_bytes:
                self._face_cache[key] = face
                self._face_cache_bytes += face.numel()
        return [self._face_cache[k] if k in self._face_cache else fresh[k] for k in keys]

    def _jitter(self, x: torch.Tensor, params: Sequence[TriggerParams]) -> torch.Tensor:
        """Step 2: brightness, contrast, saturation, hue (the order and clipping of `triggers.color_jitter`)."""

        def factor(name: str) -> torch.Tensor:
            return torch.tensor([getattr(p, name) for p in params], device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)

        if all(p.brightness == p.contrast == p.saturation == 1.0 and p.hue == 0.0 for p in params):
            return x
        gray_weights = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * factor("brightness")).clamp_(0, 255)
        side = torch.tensor([p.side for p in params], device=x.device)
        grid = torch.arange(x.shape[-1], device=x.device)
        inside = (grid.view(1, -1) < side.view(-1, 1)).to(x.dtype)  # [B, P]
        gray = (x * gray_weights).sum(1)  # [B, P, P]
        total = torch.einsum("bij,bi,bj->b", gray, inside, inside)
        mean = (total / side.to(x.dtype) ** 2).view(-1, 1, 1, 1)
        contrast = factor("contrast")
        x = (contrast * x + (1.0 - contrast) * mean).clamp_(0, 255)
        saturation = factor("saturation")
        x = (saturation * x + (1.0 - saturation) * (x * gray_weights).sum(1, keepdim=True)).clamp_(0, 255)
        shifted = [i for i, p in enumerate(params) if p.hue != 0.0]
        if shifted:
            part = x if len(shifted) == len(params) else x[shifted]
            hsv = rgb_to_hsv(part / 255.0)
            hue = factor("hue")[shifted].view(-1, 1, 1)
            hsv[:, 0] = torch.remainder(hsv[:, 0] + hue, 1.0)
            part = (hsv_to_rgb(hsv) * 255.0).clamp_(0, 255)
            if len(shifted) == len(params):
                x = part
            else:
                x[shifted] = part
        return x.round_()

    def _rotate(self, patches: torch.Tensor, params: Sequence[TriggerParams]) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 3: each pasted box's pixels sampled from the rotated (and, if needed, scaled-down) patch.

        Returns the box-local pixels [B, 3, Hb, Wb] (rounded values, top-left aligned, Hb x Wb the largest box) and
        where they are opaque [B, 1, Hb, Wb] (inside the face square after rotation, and inside the box)."""
        largest = patches.shape[-1]
        box_w = max(p.patch_size[0] for p in params)
        box_h = max(p.patch_size[1] for p in params)
        affine, sizes = [], []
        for p in params:
            (a, b, c, d, e, f), (width, height) = rotation_matrix(p.side, p.angle)
            pw, ph = p.patch_size
            sx, sy = width / pw, height / ph  # the fit-to-image scale (1 when the patch fits)
            # box pixel centre (u, v) -> (u sx, v sy) on the rotated canvas -> (a u' + b v' + c, d u' + e v' + f)
            affine.append([[a * sx, b * sy, c], [d * sx, e * sy, f]])
            sizes.append([pw, ph, p.side])
        affine_t = torch.tensor(affine, device=self.device, dtype=torch.float64)  # [B, 2, 3]
        sizes_t = torch.tensor(sizes, device=self.device, dtype=torch.float64)  # [B, 3]
        us = torch.arange(box_w, device=self.device, dtype=torch.float64) + 0.5
        vs = torch.arange(box_h, device=self.device, dtype=torch.float64) + 0.5
        # face coordinates of every box pixel: [B, Hb, Wb] each
        fx = (
            affine_t[:, 0, 0, None, None] * us
            + affine_t[:, 0, 1, None, None] * vs[:, None]
            + affine_t[:, 0, 2, None, None]
        )
        fy = (
            affine_t[:, 1, 0, None, None] * us
            + affine_t[:, 1, 1, None, None] * vs[:, None]
            + affine_t[:, 1, 2, None, None]
        )
        side = sizes_t[:, 2, None, None]
        in_box = (us < sizes_t[:, 0, None, None]) & (vs[:, None] < sizes_t[:, 1, None, None])
        opaque = in_box & (fx >= 0) & (fy >= 0) & (fx < side) & (fy < side)
        grid = torch.stack([fx, fy], -1).mul_(2.0 / largest).sub_(1.0).to(patches.dtype)
        sampled = F.grid_sample(patches, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return sampled.add_(_TRUNCATE_SLACK).floor_().clamp_(0, 255), opaque.unsqueeze(1)


# Pillow's rotation truncates its bilinear result to 8 bits; float32 sampling lands a hair below an integer where
# Pillow's float64 lands on it, so a small slack is added before truncating.
_TRUNCATE_SLACK = 1e-3


# ----------------------------------------------------------------------------------------------- colour


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB in [0, 1] -> HSV in [0, 1] (hue a fraction of the circle), as `triggers.rgb_to_hsv`."""
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    delta = maxc - minc
    gray = delta == 0
    s = delta / torch.where(gray, torch.ones_like(maxc), maxc)
    d = torch.where(gray, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    h = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    h = torch.remainder(h / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv` ([N, 3, H, W], hue wraps), as `triggers.hsv_to_rgb`."""
    h, s, v = torch.remainder(hsv[:, 0], 1.0), hsv[:, 1], hsv[:, 2]
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    choices = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v), 5: (v, p, q)}
    out = torch.empty_like(hsv)
    for k, (r, g, b) in choices.items():
        sel = i == k
        out[:, 0] = torch.where(sel, r, out[:, 0]) if k else r
        out[:, 1] = torch.where(sel, g, out[:, 1]) if k else g
        out[:, 2] = torch.where(sel, b, out[:, 2]) if k else b
    return out
