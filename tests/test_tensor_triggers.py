"""Triggers built as one batch of tensors: the same images as the PIL builder, and the processor's exact floats."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_privacy_backdoor.data.pixels import ImagePreprocessor, PixelCache
from hf_privacy_backdoor.data.sampling import sample_image_batch
from hf_privacy_backdoor.data.tensor_triggers import TriggerRenderer, pil_to_uint8, uint8_to_pil
from hf_privacy_backdoor.data.triggers import TriggerAugmentation
from hf_privacy_backdoor.synthetic.pretrain import tiny_image_processor


# the synthetic image recipe's augmentation: faces at 90-100 %, flips, nothing else
RECIPE = TriggerAugmentation(
    scale_range=(0.9, 1.0), brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), rotation=(0, 0)
)


def smooth(rng, height, width):
    """A picture with gradients (random colours, upsampled): resampling differences show on it."""
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


def world(size, face_sides, seed=0, people=3, photos=3, backgrounds=20):
    rng = np.random.default_rng(seed)
    faces = {
        f"Person {k}": [smooth(rng, *face_sides[(k + j) % len(face_sides)]) for j in range(photos)]
        for k in range(people)
    }
    clean = [smooth(rng, size + (i % 3), size) for i in range(backgrounds)]
    return faces, clean


def both_ways(faces, clean, size, aug, num=48, step=3):
    pil = sample_image_batch(faces, clean, 16, num, size, seed=0, step=step, aug=aug)
    specs = sample_image_batch(faces, clean, 16, num, size, seed=0, step=step, aug=aug, pil=False)
    assert [s.params for s in pil.specs] == [s.params for s in specs.specs]  # the same draws either way
    assert not specs.triggers and specs.owners == pil.owners
    reference = torch.stack([pil_to_uint8(im) for im in pil.triggers])
    return reference, TriggerRenderer(faces, clean, size).render(specs.specs), specs.specs


@pytest.mark.parametrize("face_sides", [[(64, 64)], [(80, 70), (48, 52)]])
def test_the_synthetic_recipes_triggers_are_bit_identical(face_sides):
    faces, clean = world(64, face_sides)
    reference, tensors, _ = both_ways(faces, clean, 64, RECIPE)
    assert tensors.dtype == torch.uint8 and tensors.shape == reference.shape
    assert torch.equal(tensors, reference)


@pytest.mark.parametrize("size,face_side", [(64, 64), (96, 130)])
def test_reference_augmentation_differs_only_by_float_noise(size, face_side):
    faces, clean = world(size, [(face_side, face_side)])
    reference, tensors, _ = both_ways(faces, clean, size, TriggerAugmentation(), num=64)
    diff = (tensors.int() - reference.int()).abs()
    assert diff.max() <= 1  # rotation sampled in float32 where Pillow uses float64; jitter likewise
    assert (diff > 0).float().mean() < 1e-3


def test_a_patch_scaled_down_to_fit_is_close_but_not_exact():
    # rotated faces larger than the image are resampled twice by Pillow (rotate, then antialiased resize), once here
    faces, clean = world(48, [(48, 48)])
    aug = TriggerAugmentation(scale_range=(0.9, 1.0), rotation=(40, 45))
    reference, tensors, specs = both_ways(faces, clean, 48, aug, num=8)
    assert all(max(s.params.patch_size) == 48 for s in specs)  # every patch was scaled down
    assert (tensors.float() - reference.float()).abs().mean() < 12


def test_normalised_render_is_the_processors_output_of_the_images():
    faces, clean = world(64, [(64, 64)])
    processor = tiny_image_processor(64)
    prep = ImagePreprocessor(processor)
    assert prep.exact_uint8 and prep.is_identity_at(64) and not prep.is_identity_at(32)
    renderer = TriggerRenderer(faces, clean, 64, preprocessor=prep)
    specs = sample_image_batch(faces, clean, 16, 24, 64, 0, 5, aug=TriggerAugmentation(), pil=False).specs
    images = uint8_to_pil(renderer.render(specs))
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.equal(renderer.render(specs, normalized=True), expected)
    with pytest.raises(ValueError, match="preprocessor"):
        TriggerRenderer(faces, clean, 64).render(specs, normalized=True)


def test_resized_faces_are_remembered_within_the_budget():
    faces, clean = world(64, [(64, 64)])
    specs = sample_image_batch(faces, clean, 16, 32, 64, 0, 1, aug=RECIPE, pil=False).specs
    kept = TriggerRenderer(faces, clean, 64)
    first = kept.render(specs)
    assert kept._face_cache and torch.equal(kept.render(specs), first)  # a second render reads the cache
    none = TriggerRenderer(faces, clean, 64, face_cache_bytes=0)
    assert torch.equal(none.render(specs), first) and not none._face_cache


def test_bad_renderer_input_is_refused():
    faces, clean = world(32, [(32, 32)])
    with pytest.raises(ValueError, match="image_size"):
        TriggerRenderer(faces, clean, 0)
    with pytest.raises(ValueError, match="background"):
        TriggerRenderer(faces, [], 32)
    assert TriggerRenderer(faces, clean, 32).render([]).shape == (0, 3, 32, 32)


def test_pixel_cache_gives_the_processors_floats_for_any_size():
    rng = np.random.default_rng(1)
    processor = tiny_image_processor(64)
    images = [smooth(rng, 64, 64), smooth(rng, 90, 70), smooth(rng, 40, 100).convert("L")]
    expected = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    cache = PixelCache(processor, budget_bytes=64 * 64 * 3 * 4 * 2)  # room for two of the three (float32)
    assert torch.equal(cache.get(images, [0, 1, 2]), expected)
    assert len(cache) == 2
    assert torch.equal(cache.get(images[::-1], [2, 1, 0]), expected.flip(0))  # cached and fresh rows mixed
    with pytest.raises(ValueError, match="keys"):
        cache.get(images, [0, 1])


def test_normalize_refuses_what_is_not_8_bit_rgb():
    prep = ImagePreprocessor(tiny_image_processor(32))
    with pytest.raises(ValueError, match="uint8"):
        prep.normalize(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        prep.normalize(torch.zeros(1, 4, 32, 32, dtype=torch.uint8))
