"""`pixel_values_for`: its batched path for images already at the output size gives the processor's exact floats."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from hf_privacy_backdoor.modeling import _geometry_is_identity, pixel_values_for


def _images(size, count=5, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (size[1], size[0], channels) if channels else (size[1], size[0])
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(count)]


def _reference(image_processor, images):
    rgb = [im.convert("RGB") for im in images]
    return image_processor(images=rgb, return_tensors="pt")["pixel_values"]


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_images_at_output_size_take_the_batched_path_with_identical_floats(tiny_clip, mode):
    processor = tiny_clip[1]
    side = processor.image_processor.crop_size.height
    images = _images((side, side), mode=mode)
    assert _geometry_is_identity(processor.image_processor, [im.convert("RGB") for im in images])
    out = pixel_values_for(processor, images)
    expected = _reference(processor.image_processor, images)
    assert out.dtype == expected.dtype == torch.float32 and out.shape == expected.shape
    assert torch.equal(out, expected)


@pytest.mark.parametrize("sizes", [[(80, 60)], [(64, 64), (65, 64)], [(32, 32)]])
def test_other_sizes_use_the_processors_own_path(tiny_clip, sizes):
    processor = tiny_clip[1]
    images = [im for i, size in enumerate(sizes) for im in _images(size, count=2, seed=i)]
    assert not _geometry_is_identity(processor.image_processor, images)
    assert torch.equal(pixel_values_for(processor, images), _reference(processor.image_processor, images))


@pytest.mark.parametrize("flags", [{"do_normalize": False}, {"do_rescale": False}, {"image_mean": [0.5] * 3}])
def test_batched_path_follows_the_processors_settings(tiny_clip, flags):
    image_processor = copy.deepcopy(tiny_clip[1].image_processor)
    for key, value in flags.items():
        setattr(image_processor, key, value)
    side = image_processor.crop_size.height
    images = _images((side, side), seed=3)
    assert _geometry_is_identity(image_processor, images)
    assert torch.equal(pixel_values_for(image_processor, images), _reference(image_processor, images))


def test_decoded_photo_cache_returns_fresh_copies_and_sees_a_rewritten_file(tmp_path):
    import os

    from hf_privacy_backdoor.data.faces import DecodedPhotoCache

    path = str(tmp_path / "a.png")
    first, second = _images((8, 8), count=2)
    first.save(path)
    cache = DecodedPhotoCache(max_bytes=2**20)
    got = cache.get(path)
    assert np.array_equal(np.asarray(got), np.asarray(first))
    got.paste((0, 0, 0), (0, 0, 8, 8))  # a caller changing its image does not change the next read
    assert np.array_equal(np.asarray(cache.get(path)), np.asarray(first))
    second.save(path)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new file, even within the clock's tick
    assert np.array_equal(np.asarray(cache.get(path)), np.asarray(second))


def test_decoded_photo_cache_stays_within_its_byte_budget(tmp_path):
    from hf_privacy_backdoor.data.faces import DecodedPhotoCache

    paths = []
    for i, image in enumerate(_images((8, 8), count=5)):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    cache = DecodedPhotoCache(max_bytes=3 * 8 * 8 * 3)  # three photos
    for path in paths:
        cache.get(path)
    assert cache.bytes == 3 * 8 * 8 * 3 and [key[0] for key in cache.entries] == paths[2:]  # least recent out
    off = DecodedPhotoCache(max_bytes=0)
    assert np.array_equal(np.asarray(off.get(paths[0])), np.asarray(Image.open(paths[0]).convert("RGB")))
    assert not off.entries


def test_unreadable_photo_is_skipped_with_a_warning_and_a_bad_cache_size_is_named(tmp_path, monkeypatch, caplog):
    from hf_privacy_backdoor.data import faces

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert faces.open_image(str(broken)) is None and faces.open_image(str(tmp_path / "missing.png")) is None
    assert "broken.png" in caplog.text and "missing.png" in caplog.text
    monkeypatch.setenv("HF_PRIVACY_BACKDOOR_PHOTO_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="HF_PRIVACY_BACKDOOR_PHOTO_CACHE_MB must be a number"):
        faces._cache_bytes()
    monkeypatch.setenv("HF_PRIVACY_BACKDOOR_PHOTO_CACHE_MB", "0.5")
    assert faces._cache_bytes() == 2**19
