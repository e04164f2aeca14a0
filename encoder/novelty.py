"""Is a query like the images the model learned from? Two signals, calibrated on images it did not train on.

- **reconstruction**: the reconstruction error *for the image's complexity*. Simple images (a shape on a plain
  background) rebuild easily whatever they are, busy ones badly, so the raw error mostly measures complexity. A
  line fitted on the training images, log error against log complexity (the image's lossless PNG size in bits
  per pixel, after Serrà et al. 2020, "Input complexity and out-of-distribution detection"), predicts the error
  an image of that complexity has; the signal is how far above that prediction the error lies.
- **code**: the log Mahalanobis distance of the model's raw latent under a Gaussian fitted to the training
  images' latents: a query whose code lies away from every code the model produces for its own images.

Each signal's limit comes from the held-out images of training (never trained on, so they show what an unseen
in-domain image scores; calibrating on trained images instead flags about three times the share it promises): a
normal fitted to their scores, cut at a tail share, so that a hundred held-out images give a stable limit.
Numpy only: the encoder graph supplies errors and latents.
"""
from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from functools import cached_property
from statistics import NormalDist
from typing import Any

import numpy as np

# Tail shares: together under 1.5% of unseen in-domain images are flagged. The reconstruction signal catches
# nearly everything measured; the code signal is the rarer, stricter "nothing like it in the collection".
RECONSTRUCTION_TAIL = 0.01
CODE_TAIL = 0.002
MIN_HELD_OUT = 20  # fewer held-out images than this: calibrate on every image, trained on or not (and say so)
RIDGE = 1e-6  # keeps a collapsed latent direction invertible


def complexity(pixels: np.ndarray) -> np.ndarray:
    """(n, S, S, C) uint8 -> (n,) log of each image's lossless PNG size in bits per pixel."""
    from PIL import Image

    out = np.empty(len(pixels), np.float64)
    for i, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, "PNG")
        out[i] = math.log(len(buffer.getvalue()) * 8 / (image.shape[0] * image.shape[1]))
    return out


@dataclass(frozen=True)
class Novelty:
    """The fitted line, latent Gaussian and held-out score distributions behind both signals."""

    slope: float  # log error = intercept + slope * log complexity, on the training images
    intercept: float
    code_mean: list[float]  # (d,) mean latent of the training images
    code_precision: list[list[float]]  # (d, d) inverse covariance
    reconstruction_mean: float  # held-out scores: mean and standard deviation
    reconstruction_sd: float
    code_score_mean: float
    code_score_sd: float
    calibration_images: int
    calibrated_on: str  # "held-out", or "training and held-out" when too few were held out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the model's sidecar."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Novelty:
        """The inverse of `to_dict`."""
        return cls(**data)

    # Derived once per model, not per query (the server judges every uploaded image).
    @cached_property
    def _gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.code_mean, np.float64), np.asarray(self.code_precision, np.float64)  # (d,), (d, d)

    @cached_property
    def _fitted(self) -> dict[str, tuple[float, float, float]]:
        """signal -> (held-out mean, standard deviation, z above which it fires)."""
        limit = NormalDist().inv_cdf
        return {"reconstruction": (self.reconstruction_mean, self.reconstruction_sd, limit(1 - RECONSTRUCTION_TAIL)),
                "code": (self.code_score_mean, self.code_score_sd, limit(1 - CODE_TAIL))}

    def scores(self, errors: np.ndarray, latents: np.ndarray, log_complexity: np.ndarray) -> dict[str, np.ndarray]:
        """Raw scores of n images: errors (n,), latents (n, d), log complexity (n,) -> signal -> (n,)."""
        residual = np.log(np.maximum(np.asarray(errors, np.float64), 1e-12)) - (
            self.intercept + self.slope * np.asarray(log_complexity, np.float64))
        mean, precision = self._gaussian
        d = np.asarray(latents, np.float64) - mean  # (n, d)
        squared = np.sum((d @ precision) * d, axis=1)  # (n,) d^T P d; a 3-operand einsum costs 0.14 ms per query
        return {"reconstruction": residual, "code": np.log(np.maximum(squared, 1e-12))}

    def judge(self, errors: np.ndarray, latents: np.ndarray, log_complexity: np.ndarray) -> list[dict[str, Any]]:
        """Per image: each signal's percentile among unseen in-domain images, and the signals that fired."""
        scores = self.scores(errors, latents, log_complexity)
        cdf = NormalDist().cdf
        out = []
        for i in range(len(scores["reconstruction"])):
            signals, fired = {}, []
            for name, (mean, sd, limit) in self._fitted.items():
                z = (float(scores[name][i]) - mean) / sd
                signals[name] = round(100 * cdf(z), 2)
                if z > limit:
                    fired.append(name)
            out.append({"signals": signals, "fired": fired})
        return out


def _normal(values: np.ndarray) -> tuple[float, float]:
    return float(np.mean(values)), max(float(np.std(values, ddof=1)), 1e-6)


def fit_novelty(train: tuple[np.ndarray, np.ndarray, np.ndarray],
                held_out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Novelty:
    """Fit from (errors (n,), latents (n, d), log complexity (n,)) of training and of held-out images."""
    errors, latents, log_complexity = (np.asarray(a, np.float64) for a in train)
    log_errors = np.log(np.maximum(errors, 1e-12))
    spread = float(np.var(log_complexity)) if len(log_complexity) else 0.0
    # Images all of one complexity (pure noise, one flat colour) say nothing about the slope: the line is flat.
    covariance = float(np.mean((log_complexity - log_complexity.mean()) * (log_errors - log_errors.mean()))) \
        if len(errors) else 0.0
    slope = covariance / spread if spread > 1e-8 else 0.0
    intercept = float(np.mean(log_errors) - slope * np.mean(log_complexity)) if len(errors) else 0.0
    latents = latents.reshape(len(latents), -1)
    precision = np.linalg.inv(np.cov(latents.T) + RIDGE * np.eye(latents.shape[1]))
    provisional = Novelty(float(slope), float(intercept), latents.mean(axis=0).tolist(), precision.tolist(),
                          0.0, 1.0, 0.0, 1.0, 0, "")
    enough = len(held_out[0]) >= MIN_HELD_OUT
    # Too few held-out images for a tail: every image, trained on or not (an underestimate the test share shows).
    reference = held_out if enough else tuple(np.concatenate([t, h]) for t, h in zip(train, held_out))
    scores = provisional.scores(*reference)
    (r_mean, r_sd), (c_mean, c_sd) = _normal(scores["reconstruction"]), _normal(scores["code"])
    return Novelty(provisional.slope, provisional.intercept, provisional.code_mean, provisional.code_precision,
                   r_mean, r_sd, c_mean, c_sd, int(len(reference[0])),
                   "held-out" if enough else "training and held-out")
