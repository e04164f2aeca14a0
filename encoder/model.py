"""The autoencoder as a subclassed Keras 3 model holding `encoder` and `decoder` sub-models."""
from __future__ import annotations

import keras
from keras import layers, ops

VARIANTS = ("denoising",)
DEFAULT_VARIANT = "denoising"


def downsampling_plan(image_size: int, max_steps: int = 4) -> tuple[int, int]:
    """How many stride-2 steps the encoder takes and the side of the last feature map (kept >= 4)."""
    steps, side = 0, image_size
    while side % 2 == 0 and side // 2 >= 4 and steps < max_steps:
        side //= 2
        steps += 1
    return steps, side


@keras.saving.register_keras_serializable(package="lookalike")
class Corruption(layers.Layer):
    """Training-only corruption for denoising: gaussian noise plus one random occlusion box per image."""

    def __init__(self, noise_std: float = 0.1, occlusion: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.noise_std = float(noise_std)
        self.occlusion = float(occlusion)  # probability that an image gets a box
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        # x: (B, H, W, C) float32 in [0, 1]
        if not training:
            return x
        if self.noise_std > 0:
            x = x + keras.random.normal(ops.shape(x), stddev=self.noise_std, seed=self.seed_generator)
        if self.occlusion > 0:
            x = self._occlude(x)
        return ops.clip(x, 0.0, 1.0)

    def _occlude(self, x):
        shape = ops.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        h, w = ops.cast(height, "float32"), ops.cast(width, "float32")
        # Box sides between 1/8 and 1/2 of the image, placed uniformly; one per image, applied with p=occlusion.
        u = keras.random.uniform((batch, 5), seed=self.seed_generator)  # (B, 5)
        box_h = h * (0.125 + 0.375 * u[:, 0])
        box_w = w * (0.125 + 0.375 * u[:, 1])
        top = (h - box_h) * u[:, 2]
        left = (w - box_w) * u[:, 3]
        applied = ops.cast(u[:, 4] < self.occlusion, "float32")
        rows = ops.cast(ops.arange(height), "float32")[None, :, None]  # (1, H, 1)
        cols = ops.cast(ops.arange(width), "float32")[None, None, :]  # (1, 1, W)
        inside = (
            ops.cast(rows >= top[:, None, None], "float32")
            * ops.cast(rows < (top + box_h)[:, None, None], "float32")
            * ops.cast(cols >= left[:, None, None], "float32")
            * ops.cast(cols < (left + box_w)[:, None, None], "float32")
        )  # (B, H, W)
        mask = (inside * applied[:, None, None])[..., None]  # (B, H, W, 1)
        fill = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator)  # a flat grey level per box
        return x * (1.0 - mask) + fill * mask

    def get_config(self):
        return {**super().get_config(), "noise_std": self.noise_std, "occlusion": self.occlusion, "seed": self.seed}


def _conv_encoder(image_size: int, channels: int, code_size: int) -> keras.Model:
    steps, side = downsampling_plan(image_size)
    inputs = keras.Input((image_size, image_size, channels))  # (B, S, S, C) in [0, 1]
    x = inputs
    for i in range(steps):
        filters = 32 * 2**i
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)  # side halves
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)  # (B, side * side * filters)
    code = layers.Dense(code_size, name="code")(x)  # (B, code_size), linear: distances are taken here
    return keras.Model(inputs, code, name="encoder")


def _conv_decoder(image_size: int, channels: int, code_size: int) -> keras.Model:
    steps, side = downsampling_plan(image_size)
    top_filters = 32 * 2 ** max(steps - 1, 0)
    code = keras.Input((code_size,))
    x = layers.Dense(side * side * top_filters, activation="relu")(code)
    x = layers.Reshape((side, side, top_filters))(x)  # (B, side, side, F)
    for i in reversed(range(steps)):
        x = layers.Conv2DTranspose(32 * 2**i, 3, strides=2, padding="same", activation="relu")(x)  # side doubles
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid")(x)  # (B, S, S, C) in [0, 1]
    return keras.Model(code, outputs, name="decoder")


@keras.saving.register_keras_serializable(package="lookalike")
class Autoencoder(keras.Model):
    """Convolutional denoising autoencoder: corrupt (training only) -> encoder -> code -> decoder."""

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        code_size: int = 30,
        variant: str = DEFAULT_VARIANT,
        noise_std: float = 0.1,
        occlusion: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.code_size = int(code_size)
        self.variant = variant
        self.noise_std = float(noise_std)
        self.occlusion = float(occlusion)
        self.corruption = Corruption(noise_std, occlusion, name="corruption")
        self.encoder = _conv_encoder(self.image_size, self.channels, self.code_size)
        self.decoder = _conv_decoder(self.image_size, self.channels, self.code_size)

    def call(self, x, training=False):
        # x: (B, S, S, C) float32 in [0, 1] -> reconstruction of the clean x, same shape
        z = self.encoder(self.corruption(x, training=training), training=training)
        return self.decoder(z, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "channels": self.channels,
            "code_size": self.code_size,
            "variant": self.variant,
            "noise_std": self.noise_std,
            "occlusion": self.occlusion,
        }


def build_autoencoder(
    image_size: int = 64, channels: int = 3, code_size: int = 30, variant: str = DEFAULT_VARIANT, **options
) -> Autoencoder:
    """A new, built (weights created) autoencoder."""
    model = Autoencoder(image_size, channels, code_size, variant, **options)
    model(ops.zeros((1, image_size, image_size, channels)))  # creates the weights so the model can be saved
    return model
