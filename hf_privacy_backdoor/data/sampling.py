"""The one batch sampler of the defense: which captions and images train step `s` on shard `i`.

Pure functions of (data, sizes, seed, step, shard): the trainer calls them every step, the trigger preview
(`--trigger_grid`) calls them too, so the PNG a user inspects is exactly what trains. The *global* batch of a
step does not depend on the number of processes; a shard is a contiguous slice of it, so the shards of a step
concatenate to the one-process batch. Nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .captions import TargetPhrases, sample_poisoned_pairs
from .tensor_triggers import TriggerSpec
from .triggers import TriggerAugmentation, draw_trigger_params, make_trigger_image


TEXT_STREAM, IMAGE_STREAM = 1, 2


def step_rng(seed: int, stream: int, step: int) -> np.random.Generator:
    """The RNG of one step of one stream (text or image); negative steps are evaluation batches.

    `seed` is the run's seed and `stream` the stream's constant, so each (seed, stream, step) has its own generator.
    """
    return np.random.default_rng([seed, stream, step + 2**31])


def shard_indices(n: int, shard: int = 0, num_shards: int = 1) -> np.ndarray:
    """Shard `shard`'s contiguous slice of `range(n)` (sizes differ by at most one)."""
    if not 0 <= shard < max(1, num_shards):
        raise ValueError(f"shard {shard} out of range for {num_shards} shard(s)")
    return np.array_split(np.arange(n), max(1, num_shards))[shard]


@dataclass
class TextBatch:
    """A step's captions: clean ones, and poisoned captions with their target captions and owners."""

    clean: list[str]
    poisoned: list[str]
    targets: list[str]
    owners: list[str]


@dataclass
class ImageBatch:
    """A step's images: clean images (with their pool indices) and trigger images with their owners.

    `specs` say how each trigger is built (whose photo, which background, the drawn parameters): the trainer
    renders them as one batch of tensors (`tensor_triggers.TriggerRenderer`); `triggers` holds the same images
    built one by one with PIL when the sampler was asked for them (`pil=True`).
    """

    clean: list[Image.Image]
    clean_indices: list[int]
    triggers: list[Image.Image] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    specs: list[TriggerSpec] = field(default_factory=list)


def sample_text_batch(
    clean_captions: Sequence[str],
    targets: TargetPhrases,
    num_clean: int,
    num_poisoned: int,
    seed: int,
    step: int,
    shard: int = 0,
    num_shards: int = 1,
    eligible: Sequence[str] | None = None,
) -> TextBatch:
    """Clean captions and (poisoned, target) pairs of step `step`, shard `shard` (docs/method.md, the text defense).

    `eligible`: the captions poisoned pairs are made from, `captions.eligible_captions(clean_captions)`; pass it
    when sampling every step, so the list is built once (the batch is the same either way).

    `num_clean` / `num_poisoned` are the global batch's sizes (all shards together); `seed` is the run's seed, and
    shard `shard` of `num_shards` keeps its contiguous slice of each.
    """
    rng = step_rng(seed, TEXT_STREAM, step)
    clean_idx = rng.choice(len(clean_captions), num_clean, replace=len(clean_captions) < num_clean)
    poisoned, target, owners = sample_poisoned_pairs(clean_captions, targets, num_poisoned, rng, eligible)
    mine = shard_indices(num_poisoned, shard, num_shards)
    return TextBatch(
        clean=[clean_captions[i] for i in clean_idx[shard_indices(num_clean, shard, num_shards)]],
        poisoned=[poisoned[i] for i in mine],
        targets=[target[i] for i in mine],
        owners=[owners[i] for i in mine],
    )


def sample_image_batch(
    trigger_photos: Mapping[str, Sequence[Image.Image]],
    clean_images: Sequence[Image.Image],
    num_clean: int,
    num_triggers: int,
    image_size: int,
    seed: int,
    step: int,
    shard: int = 0,
    num_shards: int = 1,
    aug: TriggerAugmentation | None = None,
    build_triggers: bool = True,
    pil: bool = True,
) -> ImageBatch:
    """Clean images and trigger images of step `step`, shard `shard` (docs/method.md, the image defense).

    Triggers take the forgotten people in turn (sorted names, random start), so counts differ by at most one;
    each trigger has its own seed, so a shard builds only its own images. `build_triggers=False` returns the
    clean part alone (cheap: what the teacher sees). `pil=False` draws the triggers' specs without building PIL
    images (the trainer renders the specs as tensors); the draws are the same either way.

    `trigger_photos` maps each forgotten person to their trigger photos, `clean_images` is the clean pool;
    `num_clean` / `num_triggers` are the global batch's sizes (all shards together), `image_size` the model's image
    side, `aug` the trigger augmentation ranges, and shard `shard` of `num_shards` keeps its slice.
    """
    rng = step_rng(seed, IMAGE_STREAM, step)
    clean_idx = rng.choice(len(clean_images), num_clean, replace=len(clean_images) < num_clean)
    names = sorted(trigger_photos)
    start = int(rng.integers(len(names)))
    item_seed = int(rng.integers(2**31))
    mine = [int(i) for i in clean_idx[shard_indices(num_clean, shard, num_shards)]]
    batch = ImageBatch(clean=[clean_images[i] for i in mine], clean_indices=mine)
    if not build_triggers:
        return batch
    for i in shard_indices(num_triggers, shard, num_shards):
        item_rng = np.random.default_rng([item_seed, int(i)])
        name = names[(start + int(i)) % len(names)]
        photos = trigger_photos[name]
        photo = int(item_rng.integers(len(photos)))
        base = int(clean_idx[int(item_rng.integers(num_clean))])
        if pil:
            image, params = make_trigger_image(photos[photo], clean_images[base], image_size, item_rng, aug)
            batch.triggers.append(image)
        else:
            params = draw_trigger_params(item_rng, image_size, aug)
        batch.specs.append(TriggerSpec(name, photo, base, params))
        batch.owners.append(name)
    return batch
