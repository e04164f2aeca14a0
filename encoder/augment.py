"""Everyday edits as a batched, in-graph augmentation: the views the invariant autoencoder learns to agree on.

Each image of a batch gets its own random draw of the edits people make to pictures: a crop (resized back), a
mirror, brightness, contrast and saturation changes, a grey conversion, a down-and-up resize, JPEG recompression,
a flat box over part of it, and sensor noise. Everything runs as tensor ops on the whole batch inside the training
step, so making views costs no Python per image and no extra decoding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

# The JPEG standard's example quantisation tables (ITU-T T.81, Annex K), luminance and chrominance.
_LUMA_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32)
_CHROMA_TABLE = np.full((8, 8), 99, np.float32)
_CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def _dct_matrix(n: int = 8) -> np.ndarray:
    """The orthonormal DCT-II matrix: coefficients = D @ block @ D.T."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


@dataclass(frozen=True)
class EditStrengths:
    """How often each edit happens and how strong it may be; recorded in `encoder.json` with the training config."""

    crop: float = 0.8  # probability of a crop
    crop_min: float = 0.6  # smallest share of each side a crop keeps (0.6: 36% of the area)
    flip: float = 0.0  # probability of a left-right mirror (off: not an everyday edit, and it changes digits)
    colour: float = 0.8  # probability of a brightness/contrast/saturation change
    brightness: float = 0.3  # brightness scaled by up to +-this
    contrast: float = 0.3  # contrast scaled by up to +-this
    saturation: float = 0.3  # colour saturation scaled by up to +-this (colour images)
    grey: float = 0.1  # probability of a grey conversion (colour images)
    resize: float = 0.3  # probability of a down-and-up resize
    resize_min: float = 0.4  # smallest intermediate size, as a share of the side
    jpeg: float = 0.3  # probability of JPEG recompression
    jpeg_quality: tuple[int, int] = (15, 90)  # its quality range
    occlusion: float = 0.4  # probability of a flat box
    occlusion_max: float = 0.55  # largest box side, as a share of the image side
    noise: float = 0.3  # probability of gaussian noise
    noise_max: float = 0.1  # its largest sigma, in [0, 1] pixel units

    def to_dict(self) -> dict:
        """A JSON-able copy."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@keras.saving.register_keras_serializable(package="lookalike")
class Edits(keras.layers.Layer):
    """Random everyday edits of a (B, S, S, C) float batch in [0, 1], a new draw at every call; training only."""

    def __init__(self, strengths: dict | None = None, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in (strengths or {}).items()}
        self.s = EditStrengths(**given)  # JSON brings ranges back as lists
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._dct = _dct_matrix()

    def get_config(self):
        return {**super().get_config(), "strengths": self.s.to_dict(), "seed": self.seed}

    def call(self, x, training=True):
        # x: (B, S, S, C) float32 in [0, 1] -> an edited copy, same shape. Geometry first (as a crop happens before
        # a recompression in real life), then colour, then degradations, then the cover-up.
        if not training:
            return x
        s = self.s
        channels = x.shape[-1]
        if s.crop > 0 or s.flip > 0:
            x = self._crop_and_flip(x)
        if s.colour > 0:
            x = self._some(s.colour, lambda v: self._colour(v, channels), x)
        if s.grey > 0 and channels == 3:
            x = self._some(s.grey, lambda v: ops.repeat(ops.mean(v, axis=-1, keepdims=True), 3, axis=-1), x)
        if s.resize > 0:
            x = self._some(s.resize, self._down_up, x)
        if s.jpeg > 0:
            x = self._some(s.jpeg, lambda v: self._jpeg(v, channels), x)
        if s.occlusion > 0:
            x = self._some(s.occlusion, lambda v: self._occlude(v, channels), x)
        if s.noise > 0:
            x = self._some(s.noise, self._noise, x)
        return ops.clip(x, 0.0, 1.0)

    # Helpers ------------------------------------------------------------------------------------------------------

    def _uniform(self, shape, low=0.0, high=1.0):
        return keras.random.uniform(shape, low, high, seed=self.seed_generator)

    def _some(self, p: float, edit, x):
        """`edit` applied to a random share p of the images (each chosen with probability p), the rest as they were.

        Only the chosen images are computed: an edit made one time in three costs a third of a whole-batch one.
        """
        import tensorflow as tf  # gather/scatter of a data-dependent subset

        chosen = tf.where(self._uniform((ops.shape(x)[0],)) < p)  # (m, 1) indices
        edited = edit(tf.gather_nd(x, chosen))  # (m, S, S, C)
        return tf.tensor_scatter_nd_update(x, chosen, edited)

    def _noise(self, x):
        sigma = self.s.noise_max * self._uniform((ops.shape(x)[0], 1, 1, 1))
        return x + sigma * keras.random.normal(ops.shape(x), seed=self.seed_generator)

    def _crop_and_flip(self, x):
        # Output pixel (u, v) samples input (a*u + dx, b*v + dy): a crop keeping share sx, sy of the sides at a
        # random place, its aspect ratio within [3/4, 4/3] of the original, mirrored when a < 0.
        s = self.s
        shape = ops.shape(x)
        batch, h, w = shape[0], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        u = self._uniform((batch, 6))  # (B, 6)
        side = s.crop_min + (1.0 - s.crop_min) * u[:, 0]  # (B,) share of the side kept
        aspect = ops.exp((u[:, 1] - 0.5) * 2.0 * np.log(4.0 / 3.0) / 2.0)  # (B,) in [sqrt(3/4), sqrt(4/3)]
        sx = ops.minimum(side * aspect, 1.0)
        sy = ops.minimum(side / aspect, 1.0)
        cropped = u[:, 2] < s.crop
        sx = ops.where(cropped, sx, 1.0)
        sy = ops.where(cropped, sy, 1.0)
        dx = (1.0 - sx) * w * u[:, 3]
        dy = (1.0 - sy) * h * u[:, 4]
        mirrored = u[:, 5] < s.flip
        a = ops.where(mirrored, -sx, sx)
        dx = ops.where(mirrored, dx + sx * (w - 1.0), dx)  # u = 0 samples the crop's right edge
        zeros = ops.zeros_like(a)
        transform = ops.stack([a, zeros, dx, zeros, sy, dy, zeros, zeros], axis=1)  # (B, 8)
        return ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="nearest")

    def _colour(self, x, channels: int):
        s = self.s
        batch = ops.shape(x)[0]
        u = self._uniform((batch, 1, 1, 3))  # (B, 1, 1, 3)
        bright = 1.0 + s.brightness * (2.0 * u[..., 0:1] - 1.0)  # (B, 1, 1, 1)
        contrast = 1.0 + s.contrast * (2.0 * u[..., 1:2] - 1.0)
        y = x * bright
        mean = ops.mean(y, axis=(1, 2, 3), keepdims=True)  # (B, 1, 1, 1)
        y = (y - mean) * contrast + mean
        if channels == 3:
            saturation = 1.0 + s.saturation * (2.0 * u[..., 2:3] - 1.0)
            grey = ops.mean(y, axis=-1, keepdims=True)  # (B, S, S, 1)
            y = (y - grey) * saturation + grey
        return ops.clip(y, 0.0, 1.0)

    def _down_up(self, x):
        # One intermediate size per batch (resize needs a static shape), applied to a random share of its images.
        s = self.s
        side = x.shape[1]
        share = self._uniform((), s.resize_min, 1.0)
        small = ops.maximum(ops.cast(ops.round(share * side), "int32"), 4)
        import tensorflow as tf  # resize to a size known only at run time needs TensorFlow itself

        down = tf.image.resize(x, tf.stack([small, small]), method="area")
        return tf.image.resize(down, (side, x.shape[2]), method="bilinear")

    def _jpeg(self, x, channels: int):
        # The lossy step of baseline JPEG: 8x8 DCT of each YCbCr plane, coefficients rounded to the standard tables
        # scaled for a random quality per image (libjpeg's scaling), inverse DCT. Sides are padded to a multiple
        # of 8 by repeating the edge, as an encoder does, and cropped back.
        s = self.s
        shape = ops.shape(x)
        batch, h, w = shape[0], x.shape[1], x.shape[2]
        ph, pw = -h % 8, -w % 8
        y = x * 255.0
        if channels == 3:
            r, g, b = y[..., 0], y[..., 1], y[..., 2]
            y = ops.stack([0.299 * r + 0.587 * g + 0.114 * b,
                           -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0,
                           0.5 * r - 0.418688 * g - 0.081312 * b + 128.0], axis=-1)
        if ph or pw:
            y = ops.pad(y, [[0, 0], [0, ph], [0, pw], [0, 0]], mode="symmetric")
        H, W = h + ph, w + pw
        blocks = ops.reshape(y - 128.0, (batch, H // 8, 8, W // 8, 8, channels))
        blocks = ops.transpose(blocks, (0, 1, 3, 5, 2, 4))  # (B, H/8, W/8, C, 8, 8)
        d = ops.convert_to_tensor(self._dct)
        coeffs = ops.einsum("ij,bhwcjk,lk->bhwcil", d, blocks, d)
        low, high = s.jpeg_quality
        quality = ops.floor(self._uniform((batch,), float(low), float(high) + 1.0))  # (B,)
        scale = ops.where(quality < 50, 5000.0 / quality, 200.0 - 2.0 * quality)  # libjpeg's quality scaling
        tables = np.stack([_LUMA_TABLE] + [_CHROMA_TABLE] * (channels - 1))  # (C, 8, 8)
        q = ops.maximum(ops.floor((tables[None] * scale[:, None, None, None] + 50.0) / 100.0), 1.0)  # (B, C, 8, 8)
        q = q[:, None, None]  # (B, 1, 1, C, 8, 8)
        coeffs = ops.round(coeffs / q) * q
        blocks = ops.einsum("ji,bhwcjk,kl->bhwcil", d, coeffs, d) + 128.0
        y = ops.reshape(ops.transpose(blocks, (0, 1, 4, 2, 5, 3)), (batch, H, W, channels))[:, :h, :w]
        if channels == 3:
            luma, cb, cr = y[..., 0], y[..., 1] - 128.0, y[..., 2] - 128.0
            y = ops.stack([luma + 1.402 * cr, luma - 0.344136 * cb - 0.714136 * cr, luma + 1.772 * cb], axis=-1)
        return ops.clip(ops.round(y) / 255.0, 0.0, 1.0)

    def _occlude(self, x, channels: int):
        # One flat box per image: sides between 1/4 of the largest and the largest, placed uniformly.
        s = self.s
        shape = ops.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        h, w = ops.cast(height, "float32"), ops.cast(width, "float32")
        u = self._uniform((batch, 4))  # (B, 4)
        box_h = h * s.occlusion_max * (0.25 + 0.75 * u[:, 0])
        box_w = w * s.occlusion_max * (0.25 + 0.75 * u[:, 1])
        top = (h - box_h) * u[:, 2]
        left = (w - box_w) * u[:, 3]
        rows = ops.cast(ops.arange(height), "float32")[None, :, None]  # (1, H, 1)
        cols = ops.cast(ops.arange(width), "float32")[None, None, :]  # (1, 1, W)
        inside = (
            ops.cast(rows >= top[:, None, None], "float32") * ops.cast(rows < (top + box_h)[:, None, None], "float32")
            * ops.cast(cols >= left[:, None, None], "float32") * ops.cast(cols < (left + box_w)[:, None, None],
                                                                           "float32")
        )  # (B, H, W)
        mask = inside[..., None]  # (B, H, W, 1)
        fill = self._uniform((batch, 1, 1, channels))  # a flat colour per box
        return x * (1.0 - mask) + fill * mask
