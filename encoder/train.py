"""Unsupervised training on decoded images: corruption, held-out split, early stopping, progress, loss curve."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoder import store
from encoder.variants import DEFAULT_VARIANT

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that shapes a training run; recorded in `encoder.json`."""

    image_size: int = 64
    channels: int = 3
    code_size: int = 30
    variant: str = DEFAULT_VARIANT
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    validation_fraction: float = 0.1
    patience: int = 4
    time_budget: float = 300.0  # seconds; no epoch starts that would likely end past it (0: no budget)
    # Denoising corruption. Noise alone measured best (benchmarks/quality.py): against noise 0.1 + occlusion 0.5 +
    # salt-and-pepper 0.02 it gained on Fashion-MNIST P@10 (0.830 vs 0.827), MNIST (0.971 vs 0.969), and MNIST
    # reconstruction (2.88 vs 4.03), losing only occlusion recall; zoom 0.15 + brightness 0.2 cost 0.004 P@10.
    noise_std: float = 0.15  # denoising: gaussian noise sigma, in [0, 1] pixel units
    occlusion: float = 0.0  # denoising: probability of an occlusion box per image
    salt_pepper: float = 0.0  # denoising: share of pixels set to black or white
    zoom: float = 0.0  # denoising: up to this share of each side cropped away and resized back
    brightness: float = 0.0  # denoising: pixel values scaled by up to +-this
    sparsity: float = 1e-3  # sparse: weight of the L1 penalty on the code
    contraction: float = 1e-3  # contractive: weight of the Jacobian penalty
    kl_weight: float = 0.05  # variational: weight of the KL term
    unit_code: bool = True  # search codes scaled to unit length (L2 ranking = cosine ranking)
    seed: int = 0

    def model_options(self) -> dict[str, float]:
        """The variant's knobs, as Autoencoder keyword arguments."""
        return {k: getattr(self, k) for k in ("noise_std", "occlusion", "salt_pepper", "zoom", "brightness",
                                               "sparsity", "contraction", "kl_weight", "unit_code")}


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction)) if n >= 10 else 0
    return order[n_val:], order[:n_val]


def _dataset(pixels: np.ndarray, batch_size: int, shuffle: bool, seed: int):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(pixels)  # (S, S, C) uint8 per element
    if shuffle:
        ds = ds.shuffle(min(len(pixels), 10_000), seed=seed, reshuffle_each_iteration=True)

    def to_pair(batch):
        x = tf.cast(batch, tf.float32) / 255.0  # (B, S, S, C) in [0, 1]
        return x, x  # the target is always the clean image; corruption happens inside the model

    return ds.batch(batch_size).map(to_pair, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _progress_callback(epochs: int):
    import keras
    from tqdm.auto import tqdm

    class EpochProgress(keras.callbacks.Callback):
        """A tqdm bar over epochs showing the losses, and a log line per epoch."""

        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc="training", unit="epoch", dynamic_ncols=True)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = {k: f"{v:.5f}" for k, v in logs.items() if "loss" in k}
            self.bar.set_postfix(shown)
            self.bar.update(1)
            log.debug("epoch %d: %s", epoch + 1, shown)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochProgress()


WARM_UP_STEPS = 1500  # optimiser steps before early stopping and learning-rate cuts may act


def _after_warm_up(callback, epochs: int):
    """`callback` with its epoch-end decisions skipped for the first `epochs` epochs."""
    act = callback.on_epoch_end

    def on_epoch_end(epoch, logs=None):
        if epoch >= epochs:
            act(epoch, logs)

    callback.on_epoch_end = on_epoch_end
    return callback


def _mean_latent(model, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """The mean latent code of (n, S, S, C) uint8 images, computed in batches."""
    total = np.zeros((model.code_size,), np.float64)
    for i in range(0, len(pixels), batch_size):
        batch = pixels[i : i + batch_size].astype(np.float32) / 255.0  # (b, S, S, C)
        total += np.asarray(model.latent(batch)).sum(axis=0)
    return (total / max(len(pixels), 1)).astype(np.float32)


def _time_budget_callback(seconds: float):
    import keras

    class TimeBudget(keras.callbacks.Callback):
        """Stop before an epoch that would probably end past the budget (EarlyStopping then restores the best)."""

        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            elapsed = time.perf_counter() - self.started
            if elapsed + elapsed / (epoch + 1) > seconds:  # the mean epoch so far predicts the next
                log.info("stopping after epoch %d: the next would pass the %.0f s training budget", epoch + 1, seconds)
                self.model.stop_training = True

    return TimeBudget()


def save_loss_curve(history: dict[str, list[float]], path: str | os.PathLike) -> None:
    """Plot training and validation loss per epoch to a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label in (("loss", "training"), ("val_loss", "held-out")):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction loss (MSE)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("lookalike autoencoder training")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train(pixels: np.ndarray, config: TrainConfig, index_dir: str | os.PathLike) -> dict[str, Any]:
    """Train an autoencoder on (n, S, S, C) uint8 images, save it into `index_dir`; return `encoder.json`."""
    import keras

    from encoder.model import build_autoencoder

    if len(pixels) == 0:
        raise ValueError("no images to train on")
    expected = (config.image_size, config.image_size, config.channels)
    if pixels.shape[1:] != expected:
        raise ValueError(f"training images have shape {pixels.shape[1:]}, config expects {expected}")
    keras.utils.set_random_seed(config.seed)
    train_idx, val_idx = _split(len(pixels), config.validation_fraction, config.seed)
    model = build_autoencoder(config.image_size, config.channels, config.code_size, config.variant,
                              **config.model_options())
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    callbacks = [_progress_callback(config.epochs)]
    if config.time_budget > 0:
        callbacks.append(_time_budget_callback(config.time_budget))
    validation = None
    if len(val_idx):
        validation = _dataset(pixels[val_idx], config.batch_size, shuffle=False, seed=config.seed)
        # A small collection has few steps per epoch, and an autoencoder's loss sits on a plateau (the mean image)
        # for its first few hundred steps: patience counts only after a warm-up, or it stops a model still to learn.
        steps_per_epoch = max(1, -(-len(train_idx) // config.batch_size))
        warm_up = min(config.epochs // 2, -(-WARM_UP_STEPS // steps_per_epoch))
        callbacks += [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True,
                                          start_from_epoch=warm_up),
            _after_warm_up(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                             patience=max(1, config.patience // 2)), warm_up),
        ]
    log.info("training %s autoencoder on %d images (%d held out), up to %d epochs",
             config.variant, len(train_idx), len(val_idx), config.epochs)
    started = time.perf_counter()
    history = model.fit(
        _dataset(pixels[train_idx], config.batch_size, shuffle=True, seed=config.seed),
        validation_data=validation, epochs=config.epochs, callbacks=callbacks,
        shuffle=False, verbose=0,  # the dataset shuffles itself
    ).history
    seconds = time.perf_counter() - started
    model.code_center.assign(_mean_latent(model, pixels[train_idx], config.batch_size * 4))
    losses = {k: [float(v) for v in history[k]] for k in ("loss", "val_loss") if k in history}
    best_epoch = int(np.argmin(losses["val_loss"])) + 1 if "val_loss" in losses else len(losses["loss"])
    summary = {
        "config": asdict(config),
        "images": int(len(train_idx)),
        "held_out": int(len(val_idx)),
        "epochs_run": len(losses["loss"]),
        "best_epoch": best_epoch,
        "final_loss": losses["loss"][-1],
        "final_val_loss": losses["val_loss"][best_epoch - 1] if "val_loss" in losses else None,
        "seconds": round(seconds, 2),
        "history": losses,
    }
    info = store.save_model(model, index_dir, summary)
    save_loss_curve(losses, Path(index_dir) / store.CURVE_FILE)
    log.info("trained in %.1fs: %d epochs, best held-out loss %.5f at epoch %d", seconds,
             summary["epochs_run"], summary["final_val_loss"] or float("nan"), best_epoch)
    return info
