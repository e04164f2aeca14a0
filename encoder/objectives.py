"""Consistency terms between the codes of two edited views of the same images (backend-neutral keras.ops).

VICReg (Bardes, Ponce & LeCun 2022): an invariance term pulls the two views' embeddings together, a variance term
keeps every dimension's spread above a floor (so the codes cannot collapse to a point), and a covariance term
decorrelates the dimensions (so they cannot collapse to a line). InfoNCE (the SimCLR loss): each view must pick its
partner out of the batch, which spreads unrelated images apart by construction.
"""
from __future__ import annotations

from keras import ops


def vicreg_terms(z1, z2, floor: float = 1.0, eps: float = 1e-4) -> dict:
    """z1, z2: (B, D) embeddings of two views -> unweighted invariance, variance and covariance terms."""
    invariance = ops.mean(ops.square(z1 - z2))
    variance = 0.0
    covariance = 0.0
    batch = ops.cast(ops.shape(z1)[0], "float32")
    dims = ops.cast(ops.shape(z1)[1], "float32")
    for z in (z1, z2):
        z = z - ops.mean(z, axis=0, keepdims=True)  # (B, D)
        std = ops.sqrt(ops.var(z, axis=0) + eps)  # (D,)
        variance = variance + ops.mean(ops.relu(floor - std)) / 2.0
        cov = ops.matmul(ops.transpose(z), z) / (batch - 1.0)  # (D, D)
        off_diagonal = ops.sum(ops.square(cov)) - ops.sum(ops.square(ops.diagonal(cov)))
        covariance = covariance + off_diagonal / dims / 2.0
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


def info_nce(z1, z2, temperature: float = 0.2):
    """z1, z2: (B, D) embeddings of two views -> the symmetric InfoNCE loss over the 2B views of the batch."""
    z = ops.concatenate([z1, z2], axis=0)  # (2B, D)
    z = z / ops.maximum(ops.norm(z, axis=1, keepdims=True), 1e-12)
    n = ops.shape(z)[0]
    half = n // 2
    logits = ops.matmul(z, ops.transpose(z)) / temperature  # (2B, 2B)
    logits = logits - 1e9 * ops.eye(n)  # a view is not its own partner
    partner = ops.concatenate([ops.arange(half, n), ops.arange(0, half)])  # view i's partner
    log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    picked = ops.take_along_axis(log_prob, partner[:, None], axis=1)  # (2B, 1)
    return -ops.mean(picked)
