"""The autoencoder family's names and one-line descriptions (no TensorFlow import: the CLI reads this at start)."""
from __future__ import annotations

DESCRIPTIONS = {
    "dense": "deep fully-connected autoencoder (Hinton & Salakhutdinov 2006: 784-1000-500-250-30, scaled)",
    "conv": "convolutional autoencoder",
    "denoising": "convolutional, trained to rebuild clean images from noisy, occluded, salt-and-pepper copies",
    "sparse": "convolutional with an L1 penalty on the code",
    "contractive": "convolutional with a penalty on the encoder's Jacobian (stochastic estimate)",
    "variational": "convolutional VAE: the mean of q(z|x) is the code, KL term weighted",
    "invariant": "normalised convolutional, also trained so that two edited views of an image get the same code",
}
VARIANTS = tuple(DESCRIPTIONS)
DEFAULT_VARIANT = "invariant"  # codes that survive everyday edits, and beat PCA on photos (benchmarks/quality.py)
