"""The autoencoder: build, corrupt, train, save with its stamp, load verified, encode without predict()."""
from __future__ import annotations

import json

import numpy as np
import pytest

from encoder import store
from encoder.embed import Encoder
from encoder.model import Corruption, build_autoencoder, downsampling_plan
from encoder.options import TrainConfig
from encoder.train import train
from encoder.variants import DEFAULT_VARIANT
from tests.support import make_image


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """64 distinct 16x16 RGB images as (64, 16, 16, 3) uint8."""
    return np.stack([np.asarray(make_image(s, 16)) for s in range(64)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pixels):
    """A tiny model trained for a few epochs and saved."""
    index_dir = tmp_path_factory.mktemp("model")
    info = train(pixels, TrainConfig(image_size=16, channels=3, code_size=8, epochs=4, batch_size=16), index_dir)
    return index_dir, info


@pytest.mark.parametrize("size, steps, side", [(64, 4, 4), (32, 3, 4), (28, 2, 7), (16, 2, 4), (8, 1, 4)])
def test_downsampling_plan(size, steps, side):
    assert downsampling_plan(size) == (steps, side)


@pytest.mark.parametrize("size, channels", [(16, 1), (28, 1), (32, 3)])
def test_model_shapes(size, channels):
    model = build_autoencoder(image_size=size, channels=channels, code_size=12)
    x = np.random.default_rng(0).random((2, size, size, channels)).astype("float32")
    assert model.encoder(x).shape == (2, 12)
    assert model(x).shape == (2, size, size, channels)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        build_autoencoder(image_size=16, channels=3, code_size=8, variant="magic")


def test_corruption_only_in_training():
    layer = Corruption(noise_std=0.2, occlusion=1.0, seed=1)
    x = np.full((4, 16, 16, 3), 0.5, "float32")
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    corrupted = np.asarray(layer(x, training=True))
    assert corrupted.shape == x.shape and 0.0 <= corrupted.min() and corrupted.max() <= 1.0
    assert np.abs(corrupted - x).mean() > 0.05


def test_training_writes_model_sidecar_and_curve(trained):
    index_dir, info = trained
    sidecar = json.loads((index_dir / store.INFO_FILE).read_text())
    assert sidecar == info
    assert sidecar["sha256"] == store.file_sha256(index_dir / store.MODEL_FILE)
    assert (sidecar["image_size"], sidecar["channels"], sidecar["code_size"], sidecar["variant"]) == (16, 3, 8,
                                                                                                   DEFAULT_VARIANT)
    training = sidecar["training"]
    assert training["epochs_run"] >= 1 and training["seconds"] > 0 and training["images"] + training["held_out"] == 64
    held_out = training["held_out_checks"]
    assert held_out and training["final_val_loss"] == held_out[-1][1]
    assert training["history"]["reconstruction"][-1] < training["history"]["reconstruction"][0]  # it learned
    assert (index_dir / store.CURVE_FILE).read_bytes().startswith(b"\x89PNG")


def test_loaded_encoder_matches_saved_model(trained, pixels):
    index_dir, _ = trained
    encoder = Encoder.load(index_dir)
    codes, errors = encoder.encode_with_error(pixels)
    assert codes.shape == (64, 8) and codes.dtype == np.float32 and errors.shape == (64,)
    direct = np.asarray(encoder.model.encoder(pixels.astype("float32") / 255.0))  # (64, 8) raw latents
    spaced = (direct - np.asarray(encoder.model.code_center)) @ np.asarray(encoder.model.code_basis)
    unit = spaced / np.linalg.norm(spaced, axis=1, keepdims=True)  # default search codes: centred, rescaled, length 1
    np.testing.assert_allclose(codes, unit, atol=1e-4)
    # Batching must not change a code: one image alone encodes as it does within a batch.
    np.testing.assert_allclose(encoder.encode(pixels[5:6])[0], codes[5], atol=1e-4)
    assert 0 < errors.mean() < 0.1
    recon = encoder.reconstruct(pixels[:3])
    assert recon.shape == (3, 16, 16, 3) and recon.dtype == np.uint8


def test_encoder_never_uses_predict(trained, pixels, monkeypatch):
    index_dir, _ = trained
    encoder = Encoder.load(index_dir)

    def forbidden(*args, **kwargs):
        raise AssertionError("predict() called")

    monkeypatch.setattr(encoder.model, "predict", forbidden)
    monkeypatch.setattr(encoder.model.encoder, "predict", forbidden)
    assert encoder.encode(pixels[:2]).shape == (2, 8)


def test_wrong_shape_is_refused(trained):
    encoder = Encoder.load(trained[0])
    with pytest.raises(ValueError, match="expected"):
        encoder.encode(np.zeros((1, 32, 32, 3), np.uint8))


def test_tampered_model_is_refused(trained, tmp_path):
    index_dir, _ = trained
    for name in (store.MODEL_FILE, store.INFO_FILE):
        (tmp_path / name).write_bytes((index_dir / name).read_bytes())
    data = bytearray((tmp_path / store.MODEL_FILE).read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / store.MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(store.ModelError, match="does not match the sha256"):
        Encoder.load(tmp_path)


def test_missing_model_says_what_to_do(tmp_path):
    with pytest.raises(store.ModelError, match="indexer build"):
        Encoder.load(tmp_path)
