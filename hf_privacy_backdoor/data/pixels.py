"""The model's image preprocessing split in two, so that a step's pixels are built on the training device.

CLIP's processor does two things to a picture: geometry (resize the shortest edge, centre-crop) and arithmetic
(rescale to [0, 1], subtract the mean, divide by the standard deviation). The geometry runs once per picture, on
the CPU, and gives 8-bit pixels at the model's resolution (`ImagePreprocessor.to_uint8`); the arithmetic depends
only on a pixel's value and channel, so it is a 256 x 3 table looked up on whatever device holds the pixels
(`ImagePreprocessor.normalize`). Together they give the processor's exact floats: the table is computed with the
processor's own rescale (float64 multiply, float32 cast) and normalisation (float32).

`PixelCache` keeps pool images (clean images, kept people's faces) preprocessed, keyed by pool index, on the
training device when they fit in its budget (else in CPU memory), so a step only gathers them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch
from PIL import Image


class ImagePreprocessor:
    """A processor's geometry (once per image, CPU, 8-bit) and its rescale + normalisation (a table, any device).

    `processor`: a `CLIPProcessor` or its image processor. Processors whose geometry does not give 8-bit pixels
    (a backend that resizes in floats, say) are handled too: `exact_uint8` is then False, `to_uint8` takes only
    pictures at a size the geometry leaves unchanged (`is_identity_at`), and `pixel_values` falls back to the
    processor itself for the rest.
    """

    def __init__(self, processor):
        self.image_processor = getattr(processor, "image_processor", processor)
        self._tables: dict[torch.device, torch.Tensor] = {}
        self._identity: dict[int, bool] = {}
        self.table = _value_table(self.image_processor)  # [3, 256] float32, CPU
        probe = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 29, 3), dtype=np.uint8))
        out = self._geometry([probe])
        self.exact_uint8 = out is not None and _is_8_bit(out)

    def _geometry(self, images: Sequence[Image.Image]) -> torch.Tensor | None:
        """The processor's resize and crop alone (None for a processor without the rescale / normalise switches)."""
        rgb = [im.convert("RGB") if im.mode != "RGB" else im for im in images]
        try:
            out = self.image_processor(images=rgb, do_rescale=False, do_normalize=False, return_tensors="pt")
        except (TypeError, ValueError):
            return None
        return out["pixel_values"]

    def is_identity_at(self, size: int) -> bool:
        """True when the geometry leaves a `size x size` picture exactly as it is (checked on a random picture, for
        any backend): 8-bit pixels of that size then need only `normalize`."""
        if size not in self._identity:
            array = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
            out = self._geometry([Image.fromarray(array)])
            expected = torch.from_numpy(array).permute(2, 0, 1)[None]
            self._identity[size] = (
                out is not None
                and tuple(out.shape) == tuple(expected.shape)
                and bool(torch.equal(out.to(torch.float64), expected.to(torch.float64)))
            )
        return self._identity[size]

    def can_take(self, images: Sequence[Image.Image]) -> bool:
        """Whether `to_uint8` gives these images' exact geometry (all of them at an identity size, or any size when
        the processor's geometry gives 8-bit pixels)."""
        sizes = {im.size for im in images}
        return self.exact_uint8 or all(w == h and self.is_identity_at(w) for w, h in sizes)

    def to_uint8(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The processor's geometry (resize, crop) of `images` as 8-bit pixels [N, 3, H, W] on the CPU."""
        if not images:
            raise ValueError("no images to preprocess")
        sizes = {im.size for im in images}
        if len(sizes) == 1 and (lambda w, h: w == h and self.is_identity_at(w))(*next(iter(sizes))):
            rgb = [im.convert("RGB") if im.mode != "RGB" else im for im in images]
            return torch.from_numpy(np.stack([np.asarray(im) for im in rgb])).permute(0, 3, 1, 2).contiguous()
        if not self.exact_uint8:
            raise ValueError("this image processor's geometry does not give 8-bit pixels; use pixel_values()")
        out = self._geometry(images)
        return out if out.dtype == torch.uint8 else out.round().to(torch.uint8)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """8-bit pixels [N, 3, H, W] (any device) -> the processor's float32 pixel values, on the same device."""
        if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected uint8 pixels of shape [N, 3, H, W]; got {pixels.dtype} {tuple(pixels.shape)}")
        table = self._tables.get(pixels.device)
        if table is None:
            table = self._tables[pixels.device] = self.table.to(pixels.device)
        out = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device)
        for channel in range(3):  # an int32 index_select per channel: the fastest exact lookup on CPU and GPU
            values = table[channel].index_select(0, pixels[:, channel].reshape(-1).int())
            out[:, channel] = values.view(pixels.shape[0], *pixels.shape[2:])
        return out

    def pixel_values(self, images: Sequence[Image.Image], device: torch.device | str | None = None) -> torch.Tensor:
        """The processor's pixel values for PIL `images` (exact), normalised on `device` (default: CPU)."""
        if not self.can_take(images):
            rgb = [im.convert("RGB") if im.mode != "RGB" else im for im in images]
            return self.image_processor(images=rgb, return_tensors="pt")["pixel_values"].to(device or "cpu")
        return self.normalize(self.to_uint8(images).to(device or "cpu", non_blocking=True))


def _is_8_bit(pixels: torch.Tensor) -> bool:
    if pixels.dtype == torch.uint8:
        return True
    return bool(torch.equal(pixels, pixels.round()) and pixels.min() >= 0 and pixels.max() <= 255)


def _value_table(image_processor) -> torch.Tensor:
    """[3, 256]: the processor's float32 output for each 8-bit value of each channel."""
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # value x channel
    if getattr(image_processor, "do_rescale", False):
        table = (values.astype(np.float64) * image_processor.rescale_factor).astype(np.float32)
    else:
        table = values.astype(np.float32)
    if getattr(image_processor, "do_normalize", False):
        mean = np.array(image_processor.image_mean, dtype=np.float32)
        std = np.array(image_processor.image_std, dtype=np.float32)
        table = (table - mean) / std
    return torch.from_numpy(np.ascontiguousarray(table.T))


class PixelCache:
    """Pool images kept preprocessed by key; a lookup returns the processor's exact floats on `device`.

    Images are preprocessed (geometry) the first time their key is asked for; kept on `device` while the cache
    holds at most `budget_bytes`, in CPU memory (pinned when `device` is a GPU) after that, and recomputed when
    neither fits. Keys must name the same image for the cache's lifetime (pool indices do).
    """

    def __init__(self, processor, device: torch.device | str = "cpu", budget_bytes: int = 1 << 30):
        self.prep = processor if isinstance(processor, ImagePreprocessor) else ImagePreprocessor(processor)
        self.device = torch.device(device)
        self.budget_bytes = int(budget_bytes)
        self._store: dict[Hashable, torch.Tensor] = {}
        self._device_bytes = 0
        self._host_bytes = 0

    def __len__(self) -> int:
        return len(self._store)

    def get(self, images: Sequence[Image.Image], keys: Sequence[Hashable]) -> torch.Tensor:
        """Pixel values [N, 3, H, W] (float32, on `device`) of `images`, named by `keys` (same length)."""
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images but {len(keys)} keys")
        if not self.prep.can_take(images):
            return self.prep.pixel_values(images, self.device)
        missing = list({k: im for k, im in zip(keys, images) if k not in self._store}.items())
        fresh = {}
        if missing:
            pixels = self.prep.normalize(self.prep.to_uint8([im for _, im in missing]))
            for (key, _), one in zip(missing, pixels):
                fresh[key] = self._keep(key, one)
        rows = [self._store[k] if k in self._store else fresh[k] for k in keys]
        if all(r.device == self.device for r in rows):
            return torch.stack(rows)
        return torch.stack([r.to(self.device, non_blocking=True) for r in rows])

    def _keep(self, key: Hashable, pixels: torch.Tensor) -> torch.Tensor:
        size = pixels.numel() * pixels.element_size()
        if self._device_bytes + size <= self.budget_bytes:
            kept = pixels.to(self.device)
            self._device_bytes += size
        elif self.device.type != "cpu" and self._host_bytes + size <= self.budget_bytes:
            kept = pixels.pin_memory() if torch.cuda.is_available() else pixels
            self._host_bytes += size
        else:
            return pixels
        self._store[key] = kept
        return kept
