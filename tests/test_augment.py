"""The everyday edits that make training views: each one does what it says, on whole batches, only in training."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from encoder.augment import Edits, EditStrengths
from tests.support import make_image

OFF = {name: 0.0 for name in ("crop", "flip", "colour", "grey", "resize", "jpeg", "occlusion", "noise")}


def only(**on) -> Edits:
    """An Edits layer with every edit off except those given."""
    return Edits({**OFF, **on}, seed=7)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """16 synthetic 32x32 RGB pictures in [0, 1], (16, 32, 32, 3) float32."""
    return np.stack([np.asarray(make_image(s, 32)) for s in range(16)]).astype("float32") / 255.0


def test_no_edit_outside_training(photos):
    assert np.array_equal(np.asarray(Edits(seed=1)(photos, training=False)), photos)


def test_all_edits_keep_shape_and_range_and_differ_per_image(photos):
    edits = Edits(seed=1)
    a, b = np.asarray(edits(photos, training=True)), np.asarray(edits(photos, training=True))
    assert a.shape == photos.shape and a.min() >= 0.0 and a.max() <= 1.0
    assert not np.allclose(a, b)  # a new draw at every call
    changed = np.abs(a - photos).mean(axis=(1, 2, 3))  # (16,)
    assert (changed > 0.005).mean() > 0.8  # nearly every image gets some edit


def test_jpeg_simulation_matches_pillow(photos):
    simulated = np.asarray(only(jpeg=1.0, jpeg_quality=(20, 20))(photos, training=True))
    real = []
    for im in np.round(photos * 255).astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, "JPEG", quality=20, subsampling=0)  # 4:4:4, as simulated
        real.append(np.asarray(Image.open(buffer)))
    real = np.stack(real).astype("float32") / 255.0
    distortion = np.abs(real - photos).mean()
    assert distortion > 0.01  # quality 20 visibly damages the picture ...
    assert np.abs(simulated - real).mean() < 0.15 * distortion  # ... and the simulation damages it the same way


def test_jpeg_handles_sides_that_are_not_multiples_of_8():
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    out = np.asarray(only(jpeg=1.0)(x, training=True))
    assert out.shape == x.shape and np.abs(out - x).mean() > 0.01


def test_occlusion_paints_one_flat_box(photos):
    out = np.asarray(only(occlusion=1.0, occlusion_max=0.5)(photos, training=True))
    for original, edited in zip(photos, out):
        changed = np.abs(edited - original).max(axis=-1) > 1e-6  # (32, 32)
        rows, cols = np.nonzero(changed)
        assert len(rows) > 0
        box = edited[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert np.allclose(box, box[0, 0], atol=1e-6)  # one flat colour over a rectangle
        assert (rows.max() - rows.min() + 1) <= 16 + 1 and (cols.max() - cols.min() + 1) <= 16 + 1


def test_crop_enlarges_a_part_of_the_picture():
    ramp = np.tile(np.arange(32, dtype="float32") / 31, (32, 1))  # each column one step brighter
    x = np.repeat(ramp[None, :, :, None], 8, axis=0)  # (8, 32, 32, 1)
    out = np.asarray(only(crop=1.0, crop_min=0.5)(x, training=True))
    slopes = np.diff(out[:, 16, 4:28, 0], axis=1).mean(axis=1) * 31  # 1: uncropped; s: a crop keeping share s
    assert np.all(slopes > 0.45) and np.all(slopes < 1.0 + 1e-3) and slopes.min() < 0.9


def test_flip_mirrors():
    ramp = np.tile(np.arange(16, dtype="float32") / 15, (16, 1))
    x = np.repeat(ramp[None, :, :, None], 4, axis=0)
    out = np.asarray(only(flip=1.0)(x, training=True))
    np.testing.assert_allclose(out, x[:, :, ::-1], atol=1e-5)


def test_grey_and_colour_edits(photos):
    grey = np.asarray(only(grey=1.0)(photos, training=True))
    assert np.allclose(grey[..., 0], grey[..., 1]) and np.allclose(grey[..., 1], grey[..., 2])
    flat = np.full((8, 8, 8, 3), 0.5, "float32")
    bright = np.asarray(only(colour=1.0, brightness=0.3, contrast=0.0, saturation=0.0)(flat, training=True))
    per_image = bright.reshape(8, -1)
    assert np.allclose(per_image, per_image[:, :1], atol=1e-6) and per_image.std() > 0.02
    assert per_image.min() >= 0.35 - 1e-6 and per_image.max() <= 0.65 + 1e-6


def test_noise_and_resize_degrade(photos):
    noisy = np.asarray(only(noise=1.0, noise_max=0.1)(photos, training=True))
    assert 0.0 < np.abs(noisy - photos).mean() < 0.1
    blurred = np.asarray(only(resize=1.0, resize_min=0.3)(photos, training=True))
    roughness = lambda a: np.abs(np.diff(a, axis=2)).mean()  # noqa: E731
    assert roughness(blurred) < roughness(photos)


def test_strengths_round_trip_through_the_layer_config():
    layer = Edits({"occlusion": 0.9, "jpeg_quality": [30, 60]}, seed=3)
    config = layer.get_config()
    assert config["strengths"]["occlusion"] == 0.9 and config["strengths"]["jpeg_quality"] == [30, 60]
    again = Edits.from_config(config)
    assert again.s == layer.s == EditStrengths(occlusion=0.9, jpeg_quality=(30, 60))
