"""Training that does not depend on the machine: a step budget, no mean-image plateau, every loss term reported."""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from encoder import store
from encoder.embed import Encoder
from encoder.layers import FusedBatchNorm
from encoder.model import build_autoencoder, start_from_pca
from encoder.options import TrainConfig
from encoder.preprocess import load_image
from encoder.train import mean_image_loss, plateau_warning, reconstruction_loss, train

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "images"


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """300 real photos of the demo folder (10 from each of its 30 folders), 32x32 RGB uint8."""
    paths = [p for folder in sorted(DEMO.iterdir()) if folder.is_dir() for p in sorted(folder.glob("*.jpg"))[:10]]
    return np.stack([load_image(p, 32).pixels for p in paths])


def quick(**options) -> TrainConfig:
    """The default recipe at 32x32 with a short budget."""
    return TrainConfig(image_size=32, **{"steps": 20, **options})


def test_fused_batch_norm_equals_keras_batch_norm():
    x = np.random.default_rng(0).normal(2.0, 3.0, (32, 8, 8, 16)).astype("float32")
    ours, theirs = FusedBatchNorm(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    ours(x), theirs(x)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), atol=1e-4)
    np.testing.assert_allclose(ours.moving_mean, theirs.moving_mean, atol=1e-5)
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), atol=1e-2)


def test_untrained_model_starts_below_the_mean_image(photos):
    train_x, held_out = photos[::2], photos[1::2]
    model = build_autoencoder(image_size=32, channels=3, code_size=30, variant="invariant", shortcut=True)
    start_from_pca(model, train_x)
    # Zero-initialised deep paths: the model is the coarse images' PCA, far below the mean image at step 0.
    assert reconstruction_loss(model, held_out) < 0.7 * mean_image_loss(train_x, held_out)
    plain = build_autoencoder(image_size=32, channels=3, code_size=30, variant="invariant", shortcut=False)
    start_from_pca(plain, train_x)  # without the shortcut: exactly the mean image
    np.testing.assert_allclose(reconstruction_loss(plain, held_out), mean_image_loss(train_x, held_out), rtol=0.05)


@pytest.mark.slow
def test_held_out_loss_after_one_epoch_is_at_most_half_the_mean_image(photos, tmp_path):
    # 270 training images, a batch of 16: 16 steps make the first epoch. The default recipe, budget of 2 epochs.
    info = train(photos, quick(epochs=2, steps=0), tmp_path)
    t = info["training"]
    epoch, first_epoch = t["held_out_checks"][0]
    assert epoch == 1 and t["steps_run"] // t["epochs_run"] <= 20
    assert first_epoch <= 0.5 * t["mean_image_loss"], (first_epoch, t["mean_image_loss"])
    assert plateau_warning(info) is None


@pytest.mark.slow
def test_a_model_that_learnt_nothing_is_reported(tmp_path):
    noise = np.random.default_rng(3).integers(0, 256, (200, 16, 16, 3), dtype=np.uint8)  # nothing to learn
    info = train(noise, TrainConfig(image_size=16, code_size=8, steps=10), tmp_path)
    warning = plateau_warning(info)
    assert warning is not None and "mean image" in warning and "\n" not in warning


@pytest.mark.slow
def test_step_budget_is_exact_and_every_term_is_recorded(photos, tmp_path):
    info = train(photos[:100], quick(steps=13), tmp_path)
    t = info["training"]
    assert (t["steps_planned"], t["steps_run"], t["stopped_by"]) == (13, 13, "steps")
    assert t["images_per_second"] > 0 and t["batch_size"] >= 1 and t["seconds"] > 0
    assert t["config"]["time_budget"] == 0  # no wall-clock cap by default
    terms = set(t["history"])
    assert {"loss", "reconstruction"} <= terms and t["held_out_checks"][-1][0] == t["epochs_run"]
    assert terms & {"contrastive", "invariance"}  # the consistency term, separately
    assert all(len(v) == t["epochs_run"] for v in t["history"].values())
    assert json.loads((tmp_path / store.INFO_FILE).read_text())["training"]["history"] == t["history"]
    assert (tmp_path / store.CURVE_FILE).read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_same_images_and_seed_give_the_same_model(photos, tmp_path):
    a = train(photos[:100], quick(steps=10), tmp_path / "a")["training"]
    b = train(photos[:100], quick(steps=10), tmp_path / "b")["training"]
    assert a["history"] == b["history"]
    codes_a = Encoder.load(tmp_path / "a").encode(photos[:20])
    codes_b = Encoder.load(tmp_path / "b").encode(photos[:20])
    np.testing.assert_allclose(codes_a, codes_b, atol=1e-6)
    c = train(photos[:100], quick(steps=10, seed=1), tmp_path / "c")["training"]
    assert c["history"] != a["history"]


@pytest.mark.slow
def test_wall_clock_cap_is_an_option(photos, tmp_path):
    info = train(photos[:100], quick(steps=100_000, time_budget=2.0), tmp_path)
    t = info["training"]
    assert t["stopped_by"] == "time_budget" and 0 < t["steps_run"] < 100_000
    Encoder.load(tmp_path)  # what was learnt so far is saved and usable


def test_automatic_budget():
    config = TrainConfig()
    assert config.steps_for(1_000) == config.min_steps  # a small collection still gets enough updates
    assert config.steps_for(10_000_000) == config.max_steps
    assert TrainConfig(steps=123).steps_for(50_000) == 123
    per_pass = 50_000 // config.batch_for(50_000)
    assert TrainConfig(epochs=2).steps_for(50_000) == 2 * per_pass
    assert config.batch_for(100) == 16 and config.batch_for(1_000_000) == config.batch_size


@pytest.mark.slow
def test_a_model_of_another_format_is_refused_with_advice(photos, tmp_path):
    train(photos[:40], TrainConfig(image_size=32, code_size=8, steps=2), tmp_path)
    info = json.loads((tmp_path / store.INFO_FILE).read_text())
    info["format"] = 1
    (tmp_path / store.INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(store.ModelError, match="another version of lookalike.*--retrain"):
        Encoder.load(tmp_path)
