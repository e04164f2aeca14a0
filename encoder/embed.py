"""Encoder: a saved autoencoder loaded once, with batch encoding and reconstruction error in a fast runtime."""
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
    """Turns uint8 image arrays into codes, a batch at a time (never Keras `predict()`): one graph call for codes,
    a second for the reconstruction errors when they are wanted.

    The graphs (encoder.graphs) run in ONNX Runtime (encoder.onnx_graphs), or in TensorFlow when chosen or when
    the model cannot be converted; `runtime` says which. Reconstructed images always come from TensorFlow.
    """

    def __init__(self, model, info: dict[str, Any], batch_size: int = DEFAULT_BATCH_SIZE, onnx=None):
        from encoder.graphs import tensorflow_graphs

        self.model = model
        self.info = info
        self.image_size = int(info["image_size"])
        self.channels = int(info["channels"])
        self.code_size = int(info["code_size"])
        self.sha256 = str(info["sha256"])
        self.batch_size = batch_size
        # Models trained before the out-of-domain calibration existed have none: the caller falls back.
        self.novelty = Novelty.from_dict(info["novelty"]) if "novelty" in info else None
        self._tensorflow = tensorflow_graphs(model)
        self._onnx = onnx
        self.runtime = "onnx" if onnx is not None else "tensorflow"

    @classmethod
    def load(cls, index_dir: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE,
             runtime: str | None = None) -> Encoder:
        """Load the collection's model after verifying its sha256 (Keras safe mode stays on), and its graphs'.

        `runtime`: onnx or tensorflow; None takes the process's choice (encoder.runtime.configure_runtime).
        """
        import keras

        import encoder.model  # noqa: F401  (registers the custom classes for deserialisation)
        from encoder import onnx_graphs
        from encoder import runtime as runtimes

        info = store.read_info(index_dir)
        path = store.verified_model_path(index_dir, info)
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad archive; all mean the same to a user
            raise store.ModelError(f"cannot load {path}: {exc}; retrain with --retrain") from None
        onnx = None
        if runtimes.inference_runtime(runtime or runtimes.chosen_runtime()) == "onnx":
            onnx = onnx_graphs.load(index_dir, info, model, runtimes.compute_threads())
        log.info("loaded encoder sha256:%s (%s, %dx%dx%d -> %d) on %s", info["sha256"][:12], info["variant"],
                 info["image_size"], info["image_size"], info["channels"], info["code_size"],
                 "ONNX Runtime" if onnx is not None else "TensorFlow")
        return cls(model, info, batch_size, onnx)

    @property
    def model_id(self) -> str:
        """The model's identity as shown to users: 'sha256:<hex>'."""
        return f"sha256:{self.sha256}"

    def _check(self, pixels: np.ndarray) -> np.ndarray:
        expected = (self.image_size, self.image_size, self.channels)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise ValueError(f"expected (n, {', '.join(map(str, expected))}) uint8, got {pixels.shape}")
        return np.ascontiguousarray(pixels, dtype=np.uint8)

    def _codes(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # One batch: codes (B, d), latents (B, d).
        if self._onnx is not None:
            return self._onnx.codes(pixels)
        out = self._tensorflow["codes"](pixels)
        return out["codes"].numpy(), out["latents"].numpy()

    def _errors(self, pixels: np.ndarray, latents: np.ndarray) -> np.ndarray:
        # One batch: reconstruction errors (B,).
        if self._onnx is not None:
            return self._onnx.errors(pixels, latents)
        return self._tensorflow["errors"](pixels, latents)["errors"].numpy()

    def _query_batch(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes, latents = self._codes(pixels)
        return codes, self._errors(pixels, latents), latents

    def _batched(self, fn, pixels: np.ndarray, outputs: int) -> tuple[np.ndarray, ...]:
        pixels = self._check(pixels)
        parts = [fn(pixels[i : i + self.batch_size]) for i in range(0, len(pixels), self.batch_size)]
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(outputs))

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """(n, S, S, C) uint8 -> (n, code_size) float32 codes."""
        if len(pixels) == 0:
            return np.zeros((0, self.code_size), np.float32)
        return self._batched(self._codes, pixels, 1)[0]

    def encode_with_latents(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, S, S, C) uint8 -> codes (n, code_size) and raw latents (n, code_size): no decoder pass."""
        if len(pixels) == 0:
            empty = np.zeros((0, self.code_size), np.float32)
            return empty, empty
        return self._batched(self._codes, pixels, 2)  # type: ignore[return-value]

    def encode_with_error(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, S, S, C) uint8 -> codes (n, code_size) and reconstruction errors (n,), both float32."""
        codes, errors, _ = self.encode_for_query(pixels)
        return codes, errors

    def encode_for_query(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, S, S, C) uint8 -> codes (n, code_size), reconstruction errors (n,), raw latents (n, code_size)."""
        if len(pixels) == 0:
            empty = np.zeros((0, self.code_size), np.float32)
            return empty, np.zeros((0,), np.float32), empty
        return self._batched(self._query_batch, pixels, 3)  # type: ignore[return-value]

    def judge(self, pixels: np.ndarray, errors: np.ndarray, latents: np.ndarray) -> list[dict[str, Any]] | None:
        """Out-of-domain signals of n images (see encoder.novelty), or None for a model without the calibration."""
        if self.novelty is None:
            return None
        return self.novelty.judge(errors, latents, complexity(self._check(pixels)))

    def reconstruct(self, pixels: np.ndarray) -> np.ndarray:
        """(n, S, S, C) uint8 -> what the model makes of them, same shape, uint8."""
        if len(pixels) == 0:
            return np.zeros((0, self.image_size, self.image_size, self.channels), np.uint8)
        return self._batched(lambda batch: (self._tensorflow["reconstruct"](batch).numpy(),), pixels, 1)[0]

    def describe(self) -> dict[str, Any]:
        """The sidecar facts users care about."""
        return {k: self.info[k] for k in ("variant", "image_size", "channels", "code_size")} | {
            "model": self.model_id, "runtime": self.runtime,
            "training": store.training_summary(self.info),
        }

