"""Encoder: a saved autoencoder loaded once, with compiled batch encoding and reconstruction error."""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from encoder import store
from encoder.novelty import Novelty, complexity

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256


class Encoder:
    """Turns uint8 image arrays into codes with one compiled call per batch (never Keras `predict()`)."""

    def __init__(self, model, info: dict[str, Any], batch_size: int = DEFAULT_BATCH_SIZE):
        import tensorflow as tf

        self.model = model
        self.info = info
        self.image_size = int(info["image_size"])
        self.channels = int(info["channels"])
        self.code_size = int(info["code_size"])
        self.sha256 = str(info["sha256"])
        self.batch_size = batch_size
        # Models trained before the out-of-domain calibration existed have none: the caller falls back.
        self.novelty = Novelty.from_dict(info["novelty"]) if "novelty" in info else None
        spec = [tf.TensorSpec([None, self.image_size, self.image_size, self.channels], tf.uint8)]
        self._encode = tf.function(self._encode_graph, input_signature=spec)
        self._encode_and_score = tf.function(self._encode_and_score_graph, input_signature=spec)
        self._encode_for_query = tf.function(self._encode_for_query_graph, input_signature=spec)
        self._reconstruct = tf.function(self._reconstruct_graph, input_signature=spec)

    @classmethod
    def load(cls, index_dir: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE) -> Encoder:
        """Load the collection's model after verifying its sha256; Keras safe mode stays on."""
        import keras

        import encoder.model  # noqa: F401  (registers the custom classes for deserialisation)

        info = store.read_info(index_dir)
        path = store.verified_model_path(index_dir, info)
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad archive; all mean the same to a user
            raise store.ModelError(f"cannot load {path}: {exc}; retrain with --retrain") from None
        log.info("loaded encoder sha256:%s (%s, %dx%dx%d -> %d)", info["sha256"][:12], info["variant"],
                 info["image_size"], info["image_size"], info["channels"], info["code_size"])
        return cls(model, info, batch_size)

    @property
    def model_id(self) -> str:
        """The model's identity as shown to users: 'sha256:<hex>'."""
        return f"sha256:{self.sha256}"

    # Graphs: uint8 (B, S, S, C) in, float32 out.
    def _unit(self, pixels):
        import tensorflow as tf

        return tf.cast(pixels, tf.float32) / 255.0  # (B, S, S, C) in [0, 1]

    def _encode_graph(self, pixels):
        return self.model.encode(self._unit(pixels))  # (B, code_size)

    def _encode_for_query_graph(self, pixels):
        import tensorflow as tf

        x = self._unit(pixels)
        z = self.model.latent(x)  # (B, code_size) raw latent
        codes = self.model.search_code(z)  # (B, code_size)
        recon = self.model.decode(z)  # (B, S, S, C)
        error = tf.reduce_mean(tf.square(recon - x), axis=[1, 2, 3])  # (B,) mean squared error per pixel
        return codes, error, z

    def _encode_and_score_graph(self, pixels):
        codes, error, _ = self._encode_for_query_graph(pixels)
        return codes, error

    def _reconstruct_graph(self, pixels):
        import tensorflow as tf

        recon = self.model.decode(self.model.latent(self._unit(pixels)))
        return tf.cast(tf.round(recon * 255.0), tf.uint8)  # (B, S, S, C)

    def _check(self, pixels: np.ndarray) -> np.ndarray:
        expected = (self.image_size, self.image_size, self.channels)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(f"expected (n, {', '.join(map(str, expected))}) uint8, got {pixels.shape}")
        return np.ascontiguousarray(pixels, dtype=np.uint8)

    def _batched(self, fn, pixels: np.ndarray) -> list:
        pixels = self._check(pixels)
        return [fn(pixels[i : i + self.batch_size]) for i in range(0, len(pixels), self.batch_size)]

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """(n, S, S, C) uint8 -> (n, code_size) float32 codes."""
        if len(pixels) == 0:
            return np.zeros((0, self.code_size), np.float32)
        return np.concatenate([c.numpy() for c in self._batched(self._encode, pixels)])

    def encode_with_error(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, S, S, C) uint8 -> codes (n, code_size) and reconstruction errors (n,), both float32."""
        if len(pixels) == 0:
            return np.zeros((0, self.code_size), np.float32), np.zeros((0,), np.float32)
        parts = self._batched(self._encode_and_score, pixels)
        return np.concatenate([c.numpy() for c, _ in parts]), np.concatenate([e.numpy() for _, e in parts])

    def encode_for_query(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, S, S, C) uint8 -> codes (n, code_size), reconstruction errors (n,), raw latents (n, code_size)."""
        if len(pixels) == 0:
            empty = np.zeros((0, self.code_size), np.float32)
            return empty, np.zeros((0,), np.float32), empty
        parts = self._batched(self._encode_for_query, pixels)
        return tuple(np.concatenate([p[j].numpy() for p in parts]) for j in range(3))  # type: ignore[return-value]

    def judge(self, pixels: np.ndarray, errors: np.ndarray, latents: np.ndarray) -> list[dict[str, Any]] | None:
        """Out-of-domain signals of n images (see encoder.novelty), or None for a model without the calibration."""
        if self.novelty is None:
            return None
        return self.novelty.judge(errors, latents, complexity(self._check(pixels)))

    def reconstruct(self, pixels: np.ndarray) -> np.ndarray:
        """(n, S, S, C) uint8 -> what the model makes of them, same shape, uint8."""
        if len(pixels) == 0:
            return np.zeros((0, self.image_size, self.image_size, self.channels), np.uint8)
        return np.concatenate([r.numpy() for r in self._batched(self._reconstruct, pixels)])

    def describe(self) -> dict[str, Any]:
        """The sidecar facts users care about."""
        return {k: self.info[k] for k in ("variant", "image_size", "channels", "code_size")} | {
            "model": self.model_id,
            "training": store.training_summary(self.info),
        }

