"""Unsupervised training on decoded images: a fixed step budget, held-out check, progress with ETA, loss curve.

The budget is counted in optimiser steps, never in seconds: the same images and seed give the same steps over the
same batches, hence the same model quality, on a fast machine and on a slow one. A wall-clock cap exists
(`time_budget`) but is off unless asked for.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from encoder import store
from encoder.options import TrainConfig

log = logging.getLogger(__name__)

# A model whose held-out reconstruction loss is above this share of the mean image's has learned little.
PLATEAU_RATIO = 0.8


def _split(n: int, fraction: float, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(int(round(n * fraction)), limit) if n >= 10 else 0
    return order[n_val:], order[:n_val]


def _dataset(pixels: np.ndarray, batch_size: int, seed: int):
    import tensorflow as tf

    # Shuffled anew at every pass, in the same order on every machine (seeded); repeated without end, the step
    # budget decides when training stops; every batch full, so every step has the same size.
    ds = tf.data.Dataset.from_tensor_slices(pixels)  # (S, S, C) uint8 per element
    ds = ds.shuffle(min(len(pixels), 20_000), seed=seed, reshuffle_each_iteration=True).repeat()
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def mean_image_loss(train_pixels: np.ndarray, held_out: np.ndarray) -> float:
    """The held-out MSE of predicting every image as the training images' mean: the plateau a model must leave."""
    mean = train_pixels.astype(np.float64).mean(axis=0) / 255.0  # (S, S, C)
    total = 0.0
    for i in range(0, len(held_out), 512):
        total += float(np.square(held_out[i : i + 512] / 255.0 - mean).sum())
    return total / max(held_out.size, 1)


def _progress_callback(total_steps: int):
    import keras
    from tqdm.auto import tqdm

    class StepProgress(keras.callbacks.Callback):
        """A tqdm bar over optimiser steps (so it shows an ETA), with the latest losses; a log line per epoch."""

        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=total_steps, desc="training", unit="step", dynamic_ncols=True)

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and self.bar.n % 10 == 0:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}",
                                     rec=f"{float(logs.get('reconstruction', 0.0)):.4f}")

        def on_epoch_end(self, epoch, logs=None):
            shown = {k: f"{v:.5f}" for k, v in (logs or {}).items()}
            log.debug("epoch %d: %s", epoch + 1, shown)

        def on_train_end(self, logs=None):
            self.bar.close()

    return StepProgress()


def _step_budget(steps: int, seconds: float) -> Any:
    """A callback that stops training after exactly `steps` optimiser steps, or earlier at a wall-clock cap."""
    import keras

    class StepBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()
            self.steps_run = 0
            self.stopped_by = "steps"

        def on_train_batch_end(self, batch, logs=None):
            self.steps_run += 1
            if self.steps_run >= steps:
                self.model.stop_training = True
            elif seconds and time.perf_counter() - self.started > seconds:
                log.warning("training stopped by the %.0f s time budget after %d of %d steps", seconds,
                            self.steps_run, steps)
                self.stopped_by = "time_budget"
                self.model.stop_training = True

    return StepBudget()


CALIBRATION_IMAGES = 256  # clean training images whose statistics BatchNorm keeps for inference
HELD_OUT_CHECKS = 20  # held-out checks per training run (after the first epoch, then evenly, and at the end)


def calibrate_normalisation(model, pixels: np.ndarray) -> None:
    """Set every BatchNorm layer's inference statistics to those of clean training images under the current weights.

    During training BatchNorm normalises with each batch's own statistics and keeps a running average for
    inference; that average lags behind weights that are still moving and mixes in the edited views. Measuring the
    statistics afresh ("precise BatchNorm") makes the held-out loss and the saved model reflect the weights as they
    are. It changes nothing about training itself, which always uses batch statistics.
    """
    import keras

    norms = [layer for part in (model.encoder, model.decoder) for layer in part.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return
    sample = pixels[np.linspace(0, len(pixels) - 1, min(len(pixels), CALIBRATION_IMAGES)).astype(int)]
    x = sample.astype(np.float32) / 255.0  # (m, S, S, C)
    momenta = [layer.momentum for layer in norms]
    try:
        for layer in norms:
            layer.momentum = 0.0  # the next training-mode call replaces the running statistics with its batch's
        model.decoder(model.latent(x, training=True), training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def _held_out_callback(model, train_pixels: np.ndarray, held_out: np.ndarray, epochs: int):
    import keras

    every = max(1, epochs // HELD_OUT_CHECKS)

    class HeldOut(keras.callbacks.Callback):
        """After the first epoch, every `every` epochs and at the end: fresh BatchNorm statistics, then the held-out
        reconstruction loss, recorded as (epoch, loss). Checking every epoch would cost a small collection, whose
        epochs are a few steps, a fifth of its training time."""

        def on_train_begin(self, logs=None):
            self.checks: list[tuple[int, float]] = []

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0 or (epoch + 1) % every == 0 or self.model.stop_training:
                self.check(epoch + 1)

        def on_train_end(self, logs=None):
            if not self.checks or self.checks[-1][0] != self.epoch_count():
                self.check(self.epoch_count())

        def epoch_count(self) -> int:
            return len(self.model.history.history.get("loss", [])) if self.model.history else 0

        def check(self, epoch: int) -> None:
            calibrate_normalisation(model, train_pixels)
            if len(held_out):
                self.checks.append((epoch, reconstruction_loss(model, held_out)))

    return HeldOut()


def reconstruction_loss(model, pixels: np.ndarray, batch_size: int = 256) -> float:
    """Mean squared error per pixel of rebuilding (n, S, S, C) uint8 images, in inference mode."""
    total = 0.0
    for i in range(0, len(pixels), batch_size):
        x = pixels[i : i + batch_size].astype(np.float32) / 255.0
        total += float(np.square(np.asarray(model.decoder(model.latent(x))) - x).sum())
    return total / max(pixels.size, 1)


NOVELTY_TRAIN_IMAGES = 2_000  # training images the novelty line and latent Gaussian are fitted on


def novelty_inputs(model, pixels: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, S, S, C) uint8 -> reconstruction errors (n,), raw latents (n, d), log complexity (n,)."""
    import tensorflow as tf

    from encoder.novelty import complexity

    if len(pixels) == 0:
        return np.zeros(0), np.zeros((0, model.code_size)), np.zeros(0)
    errors, latents = [], []
    for i in range(0, len(pixels), batch_size):
        x = tf.constant(pixels[i : i + batch_size], tf.float32) / 255.0  # (B, S, S, C)
        z = model.latent(x)  # (B, d)
        errors.append(tf.reduce_mean(tf.square(model.decode(z) - x), axis=[1, 2, 3]).numpy())  # (B,)
        latents.append(np.asarray(z))
    return np.concatenate(errors), np.concatenate(latents), complexity(pixels)


def fit_code_space(model, pixels: np.ndarray, power: float, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The centre (code_size,) and basis (code_size, code_size) of the search codes, from (n, S, S, C) uint8 images.

    The basis holds the principal axes of the centred latents, each divided by its standard deviation^power.
    """
    z = np.concatenate([np.asarray(model.latent(pixels[i : i + batch_size].astype(np.float32) / 255.0))
                        for i in range(0, len(pixels), batch_size)]).astype(np.float64)  # (n, code_size)
    center = z.mean(axis=0)
    if power == 0 or len(z) < 2:
        return center.astype(np.float32), np.eye(model.code_size, dtype=np.float32)
    _, s, vt = np.linalg.svd(z - center, full_matrices=False)  # rows of vt: principal axes, strongest first
    spread = s / np.sqrt(len(z))  # (k,) standard deviation along each axis
    # A direction the images barely use (spread ~0: a tiny collection, a collapsed unit) must not be blown up
    # into noise that outweighs the real ones: its spread is floored at a hundredth of the strongest one's.
    scale = np.maximum(spread, spread[0] * 1e-2 + 1e-12) ** -power
    basis = np.zeros((model.code_size, model.code_size))
    basis[:, : len(scale)] = vt.T * scale  # (code_size, k); fewer images than dimensions leave zero columns
    return center.astype(np.float32), basis.astype(np.float32)


def save_loss_curve(history: dict[str, list[float]], checks: list, path: str | os.PathLike,
                    mean_loss: float | None = None) -> None:
    """Plot every loss term per epoch, and the held-out reconstruction against the mean image's, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for key, values in history.items():
        if values and max(values) > 0:
            label = "training loss (total)" if key == "loss" else f"{key} (weighted)"
            ax.plot(range(1, len(values) + 1), values, label=label, linewidth=1.2)
    if checks:
        epochs, held = zip(*checks)
        ax.plot(epochs, held, marker="o", markersize=3, linewidth=2.2, color="black",
                label="held-out reconstruction (MSE)")
    if mean_loss:
        ax.axhline(mean_loss, color="grey", linestyle="--", linewidth=1, label="held-out, mean image (MSE)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("lookalike autoencoder training")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train(pixels: np.ndarray, config: TrainConfig, index_dir: str | os.PathLike,
          progress: bool = True) -> dict[str, Any]:
    """Train an autoencoder on (n, S, S, C) uint8 images, save it into `index_dir`; return `encoder.json`.

    `progress` shows a bar over the steps (on stderr); the log lines come either way."""
    import keras

    from encoder.model import build_autoencoder, start_from_pca

    if len(pixels) == 0:
        raise ValueError("no images to train on")
    expected = (config.image_size, config.image_size, config.channels)
    if pixels.shape[1:] != expected:
        raise ValueError(f"training images have shape {pixels.shape[1:]}, config expects {expected}")
    keras.utils.set_random_seed(config.seed)
    train_idx, val_idx = _split(len(pixels), config.validation_fraction, config.max_held_out, config.seed)
    batch = config.batch_for(len(train_idx))
    batch = min(batch, len(train_idx))
    steps = config.steps_for(len(train_idx))
    per_pass = max(1, len(train_idx) // batch)
    epochs = math.ceil(steps / per_pass)
    sample = pixels[train_idx][:: max(1, len(train_idx) // 10_000)]  # enough for a mean and a PCA
    spread = mean_image_loss(sample, sample)
    model = build_autoencoder(config.model_options(), ramp_steps=int(config.ramp * steps),
                              reconstruction_scale=1.0 / max(spread, 1e-6))
    start_from_pca(model, sample)
    warmup = int(config.warmup * steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else config.learning_rate, decay_steps=max(1, steps - warmup), alpha=0.01,
        warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    # Created now, not inside the first traced step: variables created while tracing make TensorFlow trace the
    # whole training step a second time, which is most of a small collection's training time.
    model.optimizer.build(model.trainable_variables)
    budget = _step_budget(steps, config.time_budget)
    held_out = _held_out_callback(model, pixels[train_idx], pixels[val_idx], epochs)
    callbacks = [*([_progress_callback(steps)] if progress else []), budget, held_out]
    baseline = mean_image_loss(pixels[train_idx], pixels[val_idx]) if len(val_idx) else None
    log.info("training %s autoencoder on %d images (%d held out): %d steps of %d images", config.variant,
             len(train_idx), len(val_idx), steps, batch)
    started = time.perf_counter()
    history = model.fit(_dataset(pixels[train_idx], batch, seed=config.seed),
                        epochs=epochs, steps_per_epoch=per_pass, callbacks=callbacks,
                        shuffle=False, verbose=0).history  # the dataset shuffles itself
    seconds = time.perf_counter() - started
    center, basis = fit_code_space(model, pixels[train_idx], config.whitening)
    model.code_center.assign(center)
    model.code_basis.assign(basis)
    from encoder.novelty import fit_novelty

    fitted_on = train_idx[np.linspace(0, len(train_idx) - 1, min(len(train_idx), NOVELTY_TRAIN_IMAGES)).astype(int)]
    novelty = fit_novelty(novelty_inputs(model, pixels[fitted_on]), novelty_inputs(model, pixels[val_idx]))
    losses = {k: [float(v) for v in values] for k, values in history.items() if k != "learning_rate"}
    checks = [[int(e), float(v)] for e, v in held_out.checks]
    final = checks[-1][1] if checks else None
    summary = {
        "config": config.to_dict(),
        "images": int(len(train_idx)),
        "held_out": int(len(val_idx)),
        "batch_size": int(batch),
        "steps_planned": int(steps),
        "steps_run": int(budget.steps_run),
        "stopped_by": budget.stopped_by,
        "epochs_run": len(losses.get("loss", [])),
        "final_loss": losses["loss"][-1] if losses.get("loss") else None,
        "final_val_loss": final,
        "mean_image_loss": baseline,
        "held_out_checks": checks,  # [epoch, held-out reconstruction loss (MSE per pixel)], after that epoch
        "seconds": round(seconds, 2),
        "images_per_second": round(budget.steps_run * batch / seconds, 1) if seconds > 0 else None,
        "history": losses,
    }
    info = store.save_model(model, index_dir, summary, novelty=novelty.to_dict(), graphs=exported_graphs(model))
    save_loss_curve(losses, checks, Path(index_dir) / store.CURVE_FILE, baseline)
    log.info("trained in %.1fs: %d steps (%.0f images/s), held-out reconstruction %.5f (mean image %.5f)", seconds,
             budget.steps_run, summary["images_per_second"] or 0, final or float("nan"), baseline or float("nan"))
    return info


def exported_graphs(model) -> dict[str, bytes] | None:
    """The model's inference graphs as ONNX for encoder.onnx_graphs, or None (with a warning) if conversion fails."""
    from encoder.onnx_graphs import ConversionError, export

    try:
        return export(model)
    except ConversionError as exc:
        log.warning("%s; this model will encode with TensorFlow", exc)
        return None


def plateau_warning(info: dict[str, Any]) -> str | None:
    """One line when a trained model rebuilds held-out images little better than their mean does, else None."""
    training = info.get("training", {})
    final, baseline = training.get("final_val_loss"), training.get("mean_image_loss")
    if not final or not baseline or final < PLATEAU_RATIO * baseline:
        return None
    return (f"the encoder rebuilds held-out images barely better than their mean image (loss {final:.4f} against "
            f"{baseline:.4f}): it has learned little; train longer (--steps) or on more images")
