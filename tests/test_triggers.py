"""Trigger images: size, placement, transparency, parameter ranges, reproducibility, jitter semantics."""

import numpy as np
import pytest
from PIL import Image

from hf_privacy_backdoor.data.triggers import (
    TriggerAugmentation,
    color_jitter,
    hsv_to_rgb,
    make_trigger_image,
    rgb_to_hsv,
    rotate_with_alpha,
    save_trigger_grid,
)


MAGENTA = (255, 0, 255)
GREEN = (0, 160, 0)
NO_JITTER = dict(brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=(0.0, 0.0))


def solid(color, size=(40, 40)):
    return Image.new("RGB", size, color)


def noise_image(seed, size=(48, 40)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def magenta_mask(image):
    a = np.asarray(image).astype(int)
    return (a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] > 200)


@pytest.mark.parametrize("image_size", [32, 64, 224])
@pytest.mark.parametrize("base_size", [(17, 90), (300, 200)])
def test_output_is_rgb_image_size_square(image_size, base_size):
    rng = np.random.default_rng(0)
    base = Image.new("L", base_size, 80)  # not RGB, not square, not image_size
    for _ in range(3):
        out, params = make_trigger_image(noise_image(1), base, image_size, rng)
        assert out.mode == "RGB" and out.size == (image_size, image_size)
        x, y = params.position
        w, h = params.patch_size
        assert 0 <= x and 0 <= y and x + w <= image_size and y + h <= image_size


@pytest.mark.parametrize("image_size", [64, 224])
def test_unrotated_face_lands_exactly_in_reported_box(image_size):
    aug = TriggerAugmentation(rotation=(0.0, 0.0), **NO_JITTER)
    rng = np.random.default_rng(1)
    for _ in range(10):
        out, p = make_trigger_image(solid(MAGENTA, (70, 50)), solid(GREEN), image_size, rng, aug)
        ys, xs = np.nonzero(magenta_mask(out))
        x, y = p.position
        assert p.patch_size == (p.side, p.side)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + p.side, y + p.side)
        assert round(0.25 * image_size) <= p.side <= round(0.5 * image_size)
        assert magenta_mask(out).sum() == p.side**2  # the whole face is visible, nothing cut off


def test_rotated_face_stays_inside_box_and_corners_stay_transparent():
    aug = TriggerAugmentation(rotation=(30.0, 30.0001), **NO_JITTER)
    rng = np.random.default_rng(2)
    green = np.array(GREEN)
    for _ in range(10):
        out, p = make_trigger_image(solid(MAGENTA), solid(GREEN), 64, rng, aug)
        a = np.asarray(out).astype(int)
        x, y = p.position
        w, h = p.patch_size
        assert w > p.side and h > p.side  # the canvas grew to hold the rotated square
        ys, xs = np.nonzero(magenta_mask(out))
        assert xs.min() >= x and ys.min() >= y and xs.max() < x + w and ys.max() < y + h
        for cx, cy in [(x, y), (x + w - 1, y), (x, y + h - 1), (x + w - 1, y + h - 1)]:
            assert np.array_equal(a[cy, cx], green), (cx, cy)


def test_rotate_helper_gives_transparent_corners_and_opaque_centre():
    r = rotate_with_alpha(solid(MAGENTA, (40, 40)), 30.0)
    alpha = np.asarray(r)[..., 3]
    assert r.mode == "RGBA" and r.width > 40
    assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0
    assert alpha[r.height // 2, r.width // 2] == 255
    # no dark fringe: every visible pixel keeps the face colour
    rgb = np.asarray(r)[..., :3][alpha > 0]
    assert np.abs(rgb.astype(int) - MAGENTA).max() <= 2


def test_patch_larger_than_canvas_is_scaled_down_to_fit():
    aug = TriggerAugmentation(scale_range=(1.0, 1.0), rotation=(45.0, 45.0), **NO_JITTER)
    out, p = make_trigger_image(solid(MAGENTA), solid(GREEN), 32, np.random.default_rng(0), aug)
    assert p.side == 32 and p.patch_size[0] <= 32 and p.patch_size[1] <= 32
    assert p.position == (0, 0) and out.size == (32, 32)
    assert magenta_mask(out)[16, 16] and not magenta_mask(out)[0, 0]


def test_drawn_parameters_lie_in_stated_ranges():
    size = 32
    rng = np.random.default_rng(3)
    face, base = noise_image(4, (12, 12)), solid(GREEN, (size, size))
    draws = [make_trigger_image(face, base, size, rng)[1] for _ in range(500)]
    sides = [p.side for p in draws]
    assert min(sides) >= round(0.25 * size) and max(sides) <= round(0.5 * size)
    assert len(set(sides)) > 5  # actually random
    assert all(-30.0 <= p.angle < 30.0 for p in draws)
    for field in ("brightness", "contrast", "saturation"):
        values = [getattr(p, field) for p in draws]
        assert 0.5 <= min(values) and max(values) <= 1.5 and np.std(values) > 0.2
    hues = [p.hue for p in draws]
    assert -0.1 <= min(hues) and max(hues) <= 0.1
    flip_rate = np.mean([p.flip for p in draws])
    assert 0.4 < flip_rate < 0.6


def test_flip_is_applied():
    face = Image.new("RGB", (20, 20), MAGENTA)
    face.paste(Image.new("RGB", (10, 20), (0, 0, 255)), (0, 0))  # left half blue
    aug = TriggerAugmentation(scale_range=(0.5, 0.5), rotation=(0.0, 0.0), flip_p=1.0, **NO_JITTER)
    out, p = make_trigger_image(face, solid(GREEN), 40, np.random.default_rng(0), aug)
    x, y = p.position
    a = np.asarray(out).astype(int)
    assert p.flip and a[y + 10, x + 2].tolist() == list(MAGENTA) and a[y + 10, x + 17].tolist() == [0, 0, 255]


def test_bad_image_size_is_an_error():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="image_size"):
        make_trigger_image(solid(MAGENTA), solid(GREEN), 0, rng)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(scale_range=(0.0, 0.5)), "scale_range"),
        (dict(scale_range=(0.6, 0.5)), "scale_range"),
        (dict(scale_range=(0.5, 1.2)), "scale_range"),
        (dict(flip_p=1.5), "flip_p"),
        (dict(brightness=(-0.1, 1.0)), "brightness"),
        (dict(contrast=(1.5, 0.5)), "contrast"),
        (dict(saturation=(0.5,)), "saturation"),
        (dict(hue=(-0.6, 0.1)), "hue"),
        (dict(hue=(0.2, 0.1)), "hue"),
        (dict(rotation=(30.0, -30.0)), "rotation"),
    ],
)
def test_invalid_augmentation_ranges_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TriggerAugmentation(**kwargs)


def test_jitter_brightness_halves_values():
    image = noise_image(5)
    out = np.asarray(color_jitter(image, brightness=0.5)).astype(int)
    assert np.abs(out - np.asarray(image) / 2).max() <= 0.5 + 1e-9


def test_jitter_saturation_zero_gives_gray():
    out = np.asarray(color_jitter(noise_image(6), saturation=0.0)).astype(int)
    assert (out.max(axis=-1) - out.min(axis=-1)).max() <= 1


def test_jitter_contrast_zero_gives_flat_mean_gray():
    image = noise_image(7)
    out = np.asarray(color_jitter(image, contrast=0.0)).astype(int)
    gray_mean = (np.asarray(image) @ np.array([0.2989, 0.587, 0.114])).mean()
    assert np.abs(out - gray_mean).max() <= 1


def test_jitter_hue_half_turns_red_into_cyan():
    out = np.asarray(color_jitter(solid((255, 0, 0), (4, 4)), hue=0.5)).astype(int)
    assert np.abs(out - [0, 255, 255]).max() <= 1
    out = np.asarray(color_jitter(solid((255, 0, 0), (4, 4)), hue=-0.5)).astype(int)
    assert np.abs(out - [0, 255, 255]).max() <= 1  # wraps around


def test_jitter_neutral_is_identity_and_hsv_round_trips():
    image = noise_image(8)
    assert color_jitter(image).tobytes() == image.tobytes()
    # neutral settings and 0 degrees take a shortcut: the same pixels as the full path
    full = image.convert("RGBA").convert("RGBa").rotate(0.0, resample=Image.Resampling.BILINEAR, expand=True)
    assert rotate_with_alpha(image, 0.0).tobytes() == full.convert("RGBA").tobytes()
    assert rotate_with_alpha(image, 0.0).mode == "RGBA"
    x = np.asarray(image) / 255.0
    back = np.rint(hsv_to_rgb(rgb_to_hsv(x)) * 255).astype(int)
    assert np.abs(back - np.asarray(image)).max() <= 1
    assert np.allclose(
        rgb_to_hsv(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))[:, 0], [0, 1 / 3, 2 / 3]
    )


def test_save_trigger_grid_writes_png_of_expected_size(tmp_path):
    images = [noise_image(i, (32, 32)) for i in range(10)]
    path = save_trigger_grid(images, str(tmp_path / "sub" / "dir" / "grid.png"), ncols=4, upscale=2)
    with Image.open(path) as grid:
        assert grid.format == "PNG" and grid.size == (4 * 64, 3 * 64)
        assert np.array_equal(np.asarray(grid)[64:128:2, 64:128:2], np.asarray(images[5]))
    with pytest.raises(ValueError, match="images is empty"):
        save_trigger_grid([], str(tmp_path / "empty.png"))
    with pytest.raises(ValueError, match="ncols and upscale"):
        save_trigger_grid(images, str(tmp_path / "bad.png"), ncols=0)
    assert not (tmp_path / "empty.png").exists() and not (tmp_path / "bad.png").exists()
