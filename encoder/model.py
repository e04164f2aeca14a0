"""The autoencoder as a subclassed Keras 3 model holding `encoder` and `decoder` sub-models."""
from __future__ import annotations

import keras
from keras import layers, ops

from encoder.variants import DEFAULT_VARIANT, VARIANTS

DENSE_WIDTHS = (1000, 500, 250)  # Hinton & Salakhutdinov (2006): 784-1000-500-250-30


def downsampling_plan(image_size: int, max_steps: int = 4) -> tuple[int, int]:
    """How many stride-2 steps the encoder takes and the side of the last feature map (kept >= 4)."""
    steps, side = 0, image_size
    while side % 2 == 0 and side // 2 >= 4 and steps < max_steps:
        side //= 2
        steps += 1
    return steps, side


@keras.saving.register_keras_serializable(package="lookalike")
class Corruption(layers.Layer):
    """Training-only corruption for denoising: zoom, brightness, gaussian noise, an occlusion box, salt-and-pepper."""

    def __init__(self, noise_std: float = 0.1, occlusion: float = 0.5, salt_pepper: float = 0.0,
                 zoom: float = 0.0, brightness: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.noise_std = float(noise_std)
        self.occlusion = float(occlusion)  # probability that an image gets a box
        self.salt_pepper = float(salt_pepper)  # share of pixels set to black or white
        self.zoom = float(zoom)  # up to this share of each side cropped away, the rest resized back
        self.brightness = float(brightness)  # pixel values scaled by a factor in [1 - b, 1 + b]
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        # x: (B, H, W, C) float32 in [0, 1]
        if not training:
            return x
        if self.zoom > 0:
            x = self._zoom(x)
        if self.brightness > 0:
            factor = keras.random.uniform((ops.shape(x)[0], 1, 1, 1), 1 - self.brightness, 1 + self.brightness,
                                          seed=self.seed_generator)  # (B, 1, 1, 1)
            x = x * factor
        if self.noise_std > 0:
            x = x + keras.random.normal(ops.shape(x), stddev=self.noise_std, seed=self.seed_generator)
        if self.occlusion > 0:
            x = self._occlude(x)
        if self.salt_pepper > 0:
            shape = ops.shape(x)
            u = keras.random.uniform((shape[0], shape[1], shape[2], 1), seed=self.seed_generator)  # (B, H, W, 1)
            x = ops.where(u < self.salt_pepper / 2, 0.0, ops.where(u > 1 - self.salt_pepper / 2, 1.0, x))
        return ops.clip(x, 0.0, 1.0)

    def _zoom(self, x):
        # A random crop keeping a share s in [1 - zoom, 1] of each side, anywhere in the image, resized back to
        # full size: output pixel (u, v) samples input (s*u + dx, s*v + dy).
        shape = ops.shape(x)
        batch, h, w = shape[0], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        u = keras.random.uniform((batch, 3), seed=self.seed_generator)  # (B, 3)
        s = 1.0 - self.zoom * u[:, 0]  # (B,)
        dx = (1.0 - s) * w * u[:, 1]
        dy = (1.0 - s) * h * u[:, 2]
        zeros = ops.zeros_like(s)
        transform = ops.stack([s, zeros, dx, zeros, s, dy, zeros, zeros], axis=1)  # (B, 8)
        return ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="nearest")

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
        return {**super().get_config(), "noise_std": self.noise_std, "occlusion": self.occlusion,
                "salt_pepper": self.salt_pepper, "zoom": self.zoom, "brightness": self.brightness, "seed": self.seed}


def _conv_encoder(image_size: int, channels: int, outputs: int) -> keras.Model:
    steps, side = downsampling_plan(image_size)
    inputs = keras.Input((image_size, image_size, channels))  # (B, S, S, C) in [0, 1]
    x = inputs
    for i in range(steps):
        filters = 32 * 2**i
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)  # side halves
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)  # (B, side * side * filters)
    code = layers.Dense(outputs, name="code")(x)  # (B, outputs), linear: distances are taken here
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


def dense_widths(image_size: int, channels: int) -> tuple[int, ...]:
    """Hidden widths of the dense autoencoder: 1000-500-250 at 784 inputs, scaled by sqrt(inputs / 784)."""
    scale = min(2.0, max(0.5, (image_size * image_size * channels / 784) ** 0.5))
    return tuple(int(round(w * scale)) for w in DENSE_WIDTHS)


def _dense_encoder(image_size: int, channels: int, outputs: int) -> keras.Model:
    inputs = keras.Input((image_size, image_size, channels))
    x = layers.Flatten()(inputs)  # (B, S*S*C)
    for width in dense_widths(image_size, channels):
        x = layers.Dense(width, activation="relu")(x)
    code = layers.Dense(outputs, name="code")(x)  # (B, outputs)
    return keras.Model(inputs, code, name="encoder")


def _dense_decoder(image_size: int, channels: int, code_size: int) -> keras.Model:
    code = keras.Input((code_size,))
    x = code
    for width in reversed(dense_widths(image_size, channels)):
        x = layers.Dense(width, activation="relu")(x)
    x = layers.Dense(image_size * image_size * channels, activation="sigmoid")(x)  # (B, S*S*C)
    outputs = layers.Reshape((image_size, image_size, channels))(x)
    return keras.Model(code, outputs, name="decoder")


@keras.saving.register_keras_serializable(package="lookalike")
class Autoencoder(keras.Model):
    """The autoencoder family behind one interface: corrupt (denoising, training only) -> encoder -> code -> decoder.

    dense: Hinton & Salakhutdinov's deep MLP. conv: stride-2 convolutions. denoising: conv, trained to rebuild the
    clean image from a corrupted one. sparse: conv with an L1 penalty on the code. contractive: conv with a
    stochastic estimate of the encoder's Jacobian norm as a penalty. variational: conv encoder giving the mean and
    log-variance of q(z|x), a KL term, and the mean as the code.
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        code_size: int = 30,
        variant: str = DEFAULT_VARIANT,
        noise_std: float = 0.15,
        occlusion: float = 0.0,
        salt_pepper: float = 0.0,
        zoom: float = 0.0,
        brightness: float = 0.0,
        sparsity: float = 1e-3,
        contraction: float = 1e-3,
        contraction_sigma: float = 0.05,
        kl_weight: float = 0.05,
        unit_code: bool = False,
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
        self.salt_pepper = float(salt_pepper)
        self.zoom = float(zoom)
        self.brightness = float(brightness)
        self.sparsity = float(sparsity)
        self.contraction = float(contraction)
        self.contraction_sigma = float(contraction_sigma)
        self.kl_weight = float(kl_weight)
        self.unit_code = bool(unit_code)
        denoising = variant == "denoising"
        on = 1.0 if denoising else 0.0
        self.corruption = Corruption(on * noise_std, on * occlusion, on * salt_pepper, on * zoom, on * brightness,
                                     name="corruption")
        make_encoder, make_decoder = (_dense_encoder, _dense_decoder) if variant == "dense" else (
            _conv_encoder, _conv_decoder)
        outputs = 2 * self.code_size if variant == "variational" else self.code_size  # mean and log-variance
        self.encoder = make_encoder(self.image_size, self.channels, outputs)
        self.decoder = make_decoder(self.image_size, self.channels, self.code_size)
        self._pixels = float(self.image_size * self.image_size * self.channels)
        # The training images' mean latent, set after training: unit codes are taken around it, so that the
        # angle between two codes reflects how they differ rather than what every image shares.
        self.code_center = self.add_weight(shape=(self.code_size,), initializer="zeros", trainable=False,
                                           name="code_center")

    def latent(self, x, training=False):
        """(B, S, S, C) in [0, 1] -> (B, code_size): what the decoder rebuilds from (q(z|x)'s mean for a VAE)."""
        h = self.encoder(x, training=training)
        return h[:, : self.code_size] if self.variant == "variational" else h

    def search_code(self, z):
        """(B, code_size) latent -> the code distances are taken on: unit length when `unit_code` is set.

        On the unit sphere, L2 ranking equals cosine ranking, which ignores a latent's length; its length mostly
        tracks contrast and brightness, which similarity search should not care about.
        """
        if not self.unit_code:
            return z
        z = z - self.code_center  # (B, code_size)
        return z / ops.maximum(ops.sqrt(ops.sum(ops.square(z), axis=1, keepdims=True)), 1e-12)

    def encode(self, x):
        """(B, S, S, C) in [0, 1] -> (B, code_size) search codes."""
        return self.search_code(self.latent(x))

    def decode(self, z, training=False):
        """(B, code_size) -> (B, S, S, C) in [0, 1]."""
        return self.decoder(z, training=training)

    def call(self, x, training=False):
        # x: (B, S, S, C) float32 in [0, 1] -> reconstruction of the clean x, same shape.
        # The penalties are divided by the pixel count because the reconstruction loss is a per-pixel mean.
        h = self.encoder(self.corruption(x, training=training), training=training)
        if self.variant == "variational":
            mean, log_var = h[:, : self.code_size], h[:, self.code_size :]  # (B, code) each
            z = mean
            if training:
                z = mean + ops.exp(0.5 * log_var) * keras.random.normal(ops.shape(mean))
                kl = -0.5 * ops.mean(ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=1))
                self.add_loss(self.kl_weight * kl / self._pixels)
            return self.decoder(z, training=training)
        if training and self.variant == "sparse":
            self.add_loss(self.sparsity * ops.mean(ops.abs(h)))
        if training and self.variant == "contractive":
            # ||J_f(x)||_F^2 ~= E ||f(x + e) - f(x)||^2 / sigma^2 for e ~ N(0, sigma^2): no per-sample Jacobian needed.
            nudged = self.encoder(x + self.contraction_sigma * keras.random.normal(ops.shape(x)), training=training)
            jacobian = ops.mean(ops.sum(ops.square(nudged - h), axis=1)) / self.contraction_sigma**2
            self.add_loss(self.contraction * jacobian / self._pixels)
        return self.decoder(h, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "channels": self.channels,
            "code_size": self.code_size,
            "variant": self.variant,
            "noise_std": self.noise_std,
            "occlusion": self.occlusion,
            "salt_pepper": self.salt_pepper,
            "zoom": self.zoom,
            "brightness": self.brightness,
            "sparsity": self.sparsity,
            "contraction": self.contraction,
            "contraction_sigma": self.contraction_sigma,
            "kl_weight": self.kl_weight,
            "unit_code": self.unit_code,
        }


def build_autoencoder(
    image_size: int = 64, channels: int = 3, code_size: int = 30, variant: str = DEFAULT_VARIANT, **options
) -> Autoencoder:
    """A new, built (weights created) autoencoder."""
    model = Autoencoder(image_size, channels, code_size, variant, **options)
    model(ops.zeros((1, image_size, image_size, channels)))  # creates the weights so the model can be saved
    return model
