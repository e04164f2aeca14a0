"""The autoencoder family: every variant trains, saves, loads and encodes through the same path, and each one's
own ingredient (corruption, penalty, KL term) really acts."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from encoder.embed import Encoder
from encoder.model import Corruption, build_autoencoder, dense_widths
from encoder.options import TrainConfig
from encoder.train import train
from encoder.variants import VARIANTS
from tests.support import make_image


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """48 distinct 16x16 RGB images, (48, 16, 16, 3) uint8."""
    return np.stack([np.asarray(make_image(s, 16)) for s in range(48)])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.slow
def test_variant_trains_saves_loads_and_encodes(variant, pixels, tmp_path):
    info = train(pixels, TrainConfig(image_size=16, code_size=6, variant=variant, epochs=2, batch_size=16), tmp_path)
    sidecar = json.loads((tmp_path / "encoder.json").read_text())
    assert sidecar["variant"] == variant == info["variant"]
    assert sidecar["training"]["config"]["variant"] == variant and sidecar["training"]["seconds"] > 0
    assert sidecar["training"]["steps_run"] == sidecar["training"]["steps_planned"] > 0
    encoder = Encoder.load(tmp_path)
    assert encoder.model.variant == variant
    codes = encoder.encode(pixels)
    assert codes.shape == (48, 6) and codes.dtype == np.float32 and np.isfinite(codes).all()
    assert np.array_equal(codes, encoder.encode(pixels))  # deterministic at query time (a VAE gives its mean)
    again, errors = encoder.encode_with_error(pixels[:5])
    np.testing.assert_allclose(again, codes[:5], atol=1e-5)
    assert errors.shape == (5,) and (errors > 0).all()
    assert encoder.reconstruct(pixels[:3]).shape == (3, 16, 16, 3)
    assert len(np.unique(codes.round(4), axis=0)) == 48  # distinct images, distinct codes


def test_dense_variant_is_the_2006_shape():
    assert dense_widths(28, 1) == (1000, 500, 250)  # 784 inputs: exactly Hinton & Salakhutdinov's layers
    model = build_autoencoder(image_size=28, channels=1, code_size=30, variant="dense")
    widths = [layer.units for layer in model.encoder.layers if isinstance(layer, keras.layers.Dense)]
    assert widths == [1000, 500, 250, 30]


def test_variational_encoder_gives_mean_and_log_variance():
    model = build_autoencoder(image_size=16, channels=3, code_size=5, variant="variational")
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    assert model.encoder(x).shape == (2, 10)
    np.testing.assert_allclose(np.asarray(model.latent(x)), np.asarray(model.encoder(x))[:, :5], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant, option, term", [("sparse", "sparsity", "sparsity"),
                                                   ("contractive", "contraction", "contraction"),
                                                   ("variational", "kl_weight", "kl")])
def test_penalty_is_a_separate_training_term_scaled_by_its_weight(variant, option, term):
    model = build_autoencoder(image_size=16, channels=3, code_size=5, variant=variant, **{option: 10.0})
    x = np.random.default_rng(1).random((4, 16, 16, 3)).astype("float32")
    model(x, training=False)
    assert len(model.losses) == 0  # inference adds nothing
    terms = model.loss_terms(x)
    assert set(terms) == {term, "reconstruction"} and float(terms[term]) > 0
    assert term in model.term_names()  # reported in the history under its own name
    weak = build_autoencoder(image_size=16, channels=3, code_size=5, variant=variant, **{option: 1e-6})
    weak(x)
    weak.set_weights(model.get_weights())
    assert float(weak.loss_terms(x)[term]) < float(terms[term])  # the weight scales the penalty


@pytest.mark.slow
def test_sparse_penalty_shrinks_codes(pixels, tmp_path):
    config = dict(image_size=16, code_size=6, epochs=3, batch_size=16, unit_code=False)  # compare raw lengths
    train(pixels, TrainConfig(variant="conv", **config), tmp_path / "conv")
    train(pixels, TrainConfig(variant="sparse", sparsity=1.0, **config), tmp_path / "sparse")
    plain = np.abs(Encoder.load(tmp_path / "conv").encode(pixels)).mean()
    sparse = np.abs(Encoder.load(tmp_path / "sparse").encode(pixels)).mean()
    assert sparse < 0.5 * plain


def test_salt_and_pepper_sets_pixels_to_black_or_white():
    layer = Corruption(noise_std=0.0, occlusion=0.0, salt_pepper=0.5, seed=3)
    x = np.full((2, 32, 32, 1), 0.5, "float32")
    out = np.asarray(layer(x, training=True))
    changed = out != 0.5
    assert 0.35 < changed.mean() < 0.65 and set(np.unique(out[changed])) <= {0.0, 1.0}


def test_zoom_crops_and_resizes_back_only_in_training():
    layer = Corruption(noise_std=0.0, occlusion=0.0, zoom=0.5, seed=4)
    ramp = np.tile(np.arange(32, dtype="float32") / 31, (32, 1))  # each column one step brighter than the last
    x = np.repeat(ramp[None, :, :, None], 8, axis=0)  # (8, 32, 32, 1)
    out = np.asarray(layer(x, training=True))
    slopes = np.diff(out[:, 16, 4:28, 0], axis=1).mean(axis=1) * 31  # 1 = unzoomed, s = zoomed by 1/s
    assert out.shape == x.shape
    assert np.all(slopes >= 0.5 - 1e-3) and np.all(slopes <= 1 + 1e-3) and slopes.min() < 0.95
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def test_brightness_scales_each_image_by_one_factor():
    layer = Corruption(noise_std=0.0, occlusion=0.0, brightness=0.2, seed=5)
    x = np.full((16, 8, 8, 3), 0.5, "float32")
    out = np.asarray(layer(x, training=True))
    per_image = out.reshape(16, -1)
    assert np.allclose(per_image, per_image[:, :1], atol=1e-6)  # one factor per image
    assert np.all((per_image >= 0.4 - 1e-6) & (per_image <= 0.6 + 1e-6)) and per_image.std() > 0.01


def test_only_the_denoising_variant_corrupts():
    for variant in VARIANTS:
        model = build_autoencoder(image_size=16, channels=3, code_size=5, variant=variant, zoom=0.1, brightness=0.1)
        levels = (model.corruption.noise_std, model.corruption.occlusion, model.corruption.salt_pepper,
                  model.corruption.zoom, model.corruption.brightness)
        assert (max(levels) > 0) == (variant == "denoising"), variant


@pytest.mark.slow
def test_unit_codes_have_length_one_and_reconstruct_from_the_latent(pixels, tmp_path):
    train(pixels, TrainConfig(image_size=16, code_size=6, variant="sparse", epochs=2, batch_size=16,
                              unit_code=True), tmp_path)
    encoder = Encoder.load(tmp_path)
    codes, errors = encoder.encode_with_error(pixels[:8])
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, rtol=1e-5)
    latent = np.asarray(encoder.model.latent(pixels[:8].astype("float32") / 255.0))
    assert not np.allclose(np.linalg.norm(latent, axis=1), 1.0)  # the decoder gets the full latent
    center = np.asarray(encoder.model.code_center)
    all_latents = np.asarray(encoder.model.latent(pixels.astype("float32") / 255.0))
    assert np.linalg.norm(center) > 0 and np.linalg.norm(center - all_latents.mean(0)) < 0.2 * np.linalg.norm(center)
    basis = np.asarray(encoder.model.code_basis)
    w = (latent - center) @ basis
    np.testing.assert_allclose(codes, w / np.linalg.norm(w, axis=1, keepdims=True), atol=1e-4)  # around the mean
    recon = np.asarray(encoder.model.decode(latent))
    np.testing.assert_allclose(errors, ((recon - pixels[:8] / 255.0) ** 2).mean(axis=(1, 2, 3)), rtol=1e-3)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_the_code_space_evens_out_the_latent_directions_by_the_configured_power(power, pixels):
    from encoder.train import fit_code_space

    model = build_autoencoder(image_size=16, channels=3, code_size=6, variant="sparse")
    z = np.asarray(model.latent(pixels.astype("float32") / 255.0)).astype(np.float64)  # (48, 6)
    center, basis = fit_code_space(model, pixels, power, batch_size=20)  # batches of 20: the join is exercised
    np.testing.assert_allclose(center, z.mean(0), atol=1e-5)
    spread = np.linalg.svd((z - center) @ basis, compute_uv=False) / np.sqrt(len(z))  # (6,) strongest first
    raw = np.linalg.svd(z - z.mean(0), compute_uv=False) / np.sqrt(len(z))
    np.testing.assert_allclose(spread, raw ** (1 - power), rtol=1e-3)  # each axis's spread s becomes s^(1-power)
    if power == 0:
        np.testing.assert_array_equal(basis, np.eye(6))
