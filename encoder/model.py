"""The autoencoder as a subclassed Keras 3 model holding `encoder` and `decoder` sub-models."""
from __future__ import annotations

from dataclasses import fields, replace

import keras
import numpy as np
from keras import layers, ops

from encoder.augment import Edits
from encoder.layers import AttentionPool, Corruption, FusedBatchNorm, PixelBias
from encoder.objectives import info_nce, vicreg_terms
from encoder.options import ModelOptions

DENSE_WIDTHS = (1000, 500, 250)
# BatchNorm's moving statistics follow the last ~10 batches (Keras's 0.99 would lag ~100 steps behind the weights,
# which makes the held-out loss of a short run look far worse than the model is).
BN_MOMENTUM = 0.9  # Hinton & Salakhutdinov (2006): 784-1000-500-250-30


def downsampling_plan(image_size: int, max_steps: int = 4) -> tuple[int, int]:
    """How many stride-2 steps the encoder takes and the side of the last feature map (kept >= 4)."""
    steps, side = 0, image_size
    while side % 2 == 0 and side // 2 >= 4 and steps < max_steps:
        side //= 2
        steps += 1
    return steps, side


def start_from_pca(model: Autoencoder, pixels: np.ndarray) -> None:
    """Set the linear shortcut to the PCA of the coarse training images, and the output bias to their mean image.

    pixels: (n, S, S, C) uint8. The untrained model is then a coarse PCA autoencoder: below the mean-image loss
    from its first step, with the convolutions left to learn what a linear code of a coarse image cannot hold.
    """
    mean_image = pixels.mean(axis=0) / 255.0  # (S, S, C)
    model.decoder.get_layer("image_bias").start_at(mean_image)
    if not getattr(model, "shortcut", False):
        return
    side = _coarse_side(model.image_size)
    factor = model.image_size // side
    n, s, _, c = pixels.shape
    coarse = pixels.reshape(n, side, factor, side, factor, c).mean(axis=(2, 4)) / 255.0  # (n, side, side, C)
    flat = coarse.reshape(n, -1).astype(np.float64)  # (n, D)
    centre = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - centre, full_matrices=False)  # rows of vt: principal directions
    k = min(model.code_size, vt.shape[0])
    basis = np.zeros((flat.shape[1], model.code_size))  # (D, code)
    basis[:, :k] = vt[:k].T
    encode = model.encoder.get_layer("coarse_code")
    encode.kernel.assign(basis.astype(np.float32))
    encode.bias.assign((-centre @ basis).astype(np.float32))  # code = (coarse - centre) @ basis
    # The decoder adds its coarse image in logit space: a small change d of a pixel at mean m is d / (m (1 - m)).
    m = np.clip(centre, 0.02, 0.98)
    decode = model.decoder.get_layer("coarse_image")
    decode.kernel.assign((basis.T / (m * (1.0 - m))).astype(np.float32))
    decode.bias.assign(np.zeros(decode.bias.shape, np.float32))


def _image_output(x):
    # (B, S, S, C) pre-activation -> [0, 1], through the mean-image bias.
    return layers.Activation("sigmoid")(PixelBias(name="image_bias")(x))


def _conv_block(x, filters: int, strides: int, normalise: bool, transpose: bool = False):
    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    # With normalisation the convolution's bias is redundant (BatchNorm's beta replaces it).
    x = conv(filters, 3, strides=strides, padding="same", use_bias=not normalise,
             activation=None if normalise else "relu")(x)
    if normalise:
        # BatchNorm keeps every layer's input in range from the first step, which is what lets training leave the
        # mean-image plateau at once; at inference it is a fixed per-channel scale and shift, the same for one
        # image and for a batch.
        x = FusedBatchNorm(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
    return x


def _coarse_side(image_size: int) -> int:
    """The side of the coarse image the linear shortcut works on: the largest divisor of the input side up to 8."""
    return max(d for d in range(1, 9) if image_size % d == 0)


def _conv_encoder(image_size: int, channels: int, outputs: int, normalise: bool = False, width: int = 32,
                  pooling: str = "flatten", shortcut: bool = False) -> keras.Model:
    steps, side = downsampling_plan(image_size)
    inputs = keras.Input((image_size, image_size, channels))  # (B, S, S, C) in [0, 1]
    x = inputs
    for i in range(steps):
        filters = width * 2**i
        x = _conv_block(x, filters, 2, normalise)  # side halves
        x = _conv_block(x, filters, 1, normalise)
    if pooling == "flatten":
        x = layers.Flatten()(x)  # (B, side * side * filters): where things are is part of the code
    elif pooling == "average":
        x = layers.GlobalAveragePooling2D()(x)  # (B, filters): what is there, wherever it is
    elif pooling == "attention":
        x = AttentionPool(heads=8)(x)  # (B, 8 * filters): regions, each free to ignore spoilt cells
    else:
        raise ValueError(f"pooling must be 'flatten', 'average' or 'attention', got {pooling!r}")
    # With the shortcut the deep path starts silent (zero kernel) and the code starts as the coarse image's PCA.
    code = layers.Dense(outputs, name="code", kernel_initializer="zeros" if shortcut else "glorot_uniform")(x)
    if shortcut:
        # A linear map from a coarse copy of the image to the code, beside the deep path: PCA-like content (overall
        # colour, light and layout) is learnt in the first few steps, the convolutions add the rest.
        coarse = image_size // _coarse_side(image_size)
        flat = layers.Flatten()(layers.AveragePooling2D(coarse)(inputs))  # (B, c * c * C)
        code = layers.Add()([code, layers.Dense(outputs, name="coarse_code")(flat)])
    return keras.Model(inputs, code, name="encoder")


def _conv_decoder(image_size: int, channels: int, code_size: int, normalise: bool = False,
                  width: int = 32, shortcut: bool = False) -> keras.Model:
    steps, side = downsampling_plan(image_size)
    top_filters = width * 2 ** max(steps - 1, 0)
    code = keras.Input((code_size,))
    x = layers.Dense(side * side * top_filters, activation=None if normalise else "relu")(code)
    if normalise:
        x = layers.ReLU()(layers.BatchNormalization(momentum=BN_MOMENTUM)(x))
    x = layers.Reshape((side, side, top_filters))(x)  # (B, side, side, F)
    for i in reversed(range(steps)):
        x = _conv_block(x, width * 2**i, 2, normalise, transpose=True)  # side doubles
    # Zero-initialised, so that the untrained decoder outputs exactly the mean image (see PixelBias).
    x = layers.Conv2D(channels, 3, padding="same", kernel_initializer="zeros")(x)
    if shortcut:
        c = _coarse_side(image_size)
        coarse = layers.Reshape((c, c, channels))(layers.Dense(c * c * channels, kernel_initializer="zeros",
                                                               name="coarse_image")(code))
        x = layers.Add()([x, layers.UpSampling2D(image_size // c, interpolation="bilinear")(coarse)])
    outputs = _image_output(x)  # (B, S, S, C) in [0, 1]
    return keras.Model(code, outputs, name="decoder")


def _projector(code_size: int, width: int) -> keras.Model:
    """The head the consistency term acts on (VICReg's expander): code -> wider embedding; training only."""
    code = keras.Input((code_size,))
    x = layers.Dense(width, use_bias=False)(code)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Dense(width)(x)  # (B, width)
    return keras.Model(code, x, name="projector")


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
    x = layers.Dense(image_size * image_size * channels, kernel_initializer="zeros")(x)  # (B, S*S*C)
    outputs = _image_output(layers.Reshape((image_size, image_size, channels))(x))
    return keras.Model(code, outputs, name="decoder")


@keras.saving.register_keras_serializable(package="lookalike")
class Autoencoder(keras.Model):
    """The autoencoder family behind one interface: corrupt (denoising, training only) -> encoder -> code -> decoder.

    dense: Hinton & Salakhutdinov's deep MLP. conv: stride-2 convolutions. denoising: conv, trained to rebuild the
    clean image from a corrupted one. sparse: conv with an L1 penalty on the code. contractive: conv with a
    stochastic estimate of the encoder's Jacobian norm as a penalty. variational: conv encoder giving the mean and
    log-variance of q(z|x), a KL term, and the mean as the code. invariant: a normalised conv autoencoder that also
    makes the codes of two edited views of each image agree (a VICReg or InfoNCE term on a projection head), so
    that crops, covers, recompression and colour changes leave a code where it was.

    Training goes through `train_step`, which reports every loss term by name (Keras puts them in the history).
    """

    def __init__(self, options: ModelOptions | None = None, *, reconstruction_scale: float = 1.0,
                 ramp_steps: int = 0, **kwargs):
        """`options`, or its fields as keywords (how `from_config` passes them back), plus training's settings.

        `reconstruction_scale` is 1 / the training images' mean-image loss, set by training: the reconstruction
        term is then the share of the images' variance the model fails to rebuild (1 - R^2), the same scale for
        digits and for photos. `ramp_steps`: the steps over which the agreement term ramps in.
        """
        names = {f.name for f in fields(ModelOptions)}
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        options = replace(options or ModelOptions(), **given)  # validated in ModelOptions.__post_init__
        super().__init__(**kwargs)
        self.options = options
        o = options
        self.image_size, self.channels, self.code_size = int(o.image_size), int(o.channels), int(o.code_size)
        self.variant = variant = o.variant
        self.sparsity, self.contraction, self.contraction_sigma = o.sparsity, o.contraction, o.contraction_sigma
        self.kl_weight = float(o.kl_weight)
        self.unit_code = bool(o.unit_code)
        self.invariant = variant == "invariant"
        self.normalise = self.invariant if o.normalise is None else bool(o.normalise)
        self.width = int(o.width)
        self.pooling = o.pooling
        self.shortcut = self.invariant if o.shortcut is None else bool(o.shortcut)
        self.consistency = o.consistency
        self.consistency_weight = float(o.consistency_weight)
        self.vicreg_weights = tuple(float(w) for w in o.vicreg_weights)
        self.temperature = float(o.temperature)
        self.projector_width = int(o.projector_width)
        self.reconstruction_weight = float(o.reconstruction_weight)
        self.reconstruction_scale = float(reconstruction_scale)
        self.recon_source = o.recon_source
        self.views = o.views
        self.edit_strengths = dict(o.edits or {})
        self.ramp_steps = int(ramp_steps)
        self.seed = seed = o.seed
        on = 1.0 if variant == "denoising" else 0.0  # only the denoising variant trains on corrupted inputs
        self.corruption = Corruption(on * o.noise_std, on * o.occlusion, on * o.salt_pepper, on * o.zoom,
                                     on * o.brightness, seed=seed, name="corruption")
        outputs = 2 * self.code_size if variant == "variational" else self.code_size  # mean and log-variance
        if variant == "dense":
            self.encoder = _dense_encoder(self.image_size, self.channels, outputs)
            self.decoder = _dense_decoder(self.image_size, self.channels, self.code_size)
        else:
            self.encoder = _conv_encoder(self.image_size, self.channels, outputs, self.normalise, self.width,
                                         self.pooling, self.shortcut)
            self.decoder = _conv_decoder(self.image_size, self.channels, self.code_size, self.normalise, self.width,
                                         self.shortcut)
        if self.invariant:
            self.edits = Edits(self.edit_strengths, seed=seed, name="edits")
            self.projector = _projector(self.code_size, self.projector_width)
        self._pixels = float(self.image_size * self.image_size * self.channels)
        # The training images' mean latent, set after training: unit codes are taken around it, so that the
        # angle between two codes reflects how they differ rather than what every image shares.
        self.code_center = self.add_weight(shape=(self.code_size,), initializer="zeros", trainable=False,
                                           name="code_center")
        # And the principal axes of the centred training latents, each scaled by its spread^-power (see
        # encoder.train.fit_code_space): left as the identity, codes are only centred.
        self.code_basis = self.add_weight(shape=(self.code_size, self.code_size), initializer="identity",
                                          trainable=False, name="code_basis")
        # One running mean per loss term, made here because Keras allows no new state once the model is built.
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self.term_names()}

    def term_names(self) -> tuple[str, ...]:
        """The names the training history reports: the total and each term of the loss."""
        own: tuple[str, ...] = {"variational": ("kl",), "sparse": ("sparsity",),
                                "contractive": ("contraction",)}.get(self.variant, ())
        if self.invariant:
            own = ("contrastive",) if self.consistency == "infonce" else ("invariance", "variance", "covariance")
        return ("loss", "reconstruction", *own)

    def build(self, input_shape=None):
        # The sub-models are functional and built at construction; nothing is left to create from a shape.
        self.built = True

    # Inference ------------------------------------------------------------------------------------------------

    def latent(self, x, training=False):
        """(B, S, S, C) in [0, 1] -> (B, code_size): what the decoder rebuilds from (q(z|x)'s mean for a VAE)."""
        h = self.encoder(x, training=training)
        return h[:, : self.code_size] if self.variant == "variational" else h

    def search_code(self, z):
        """(B, code_size) latent -> the code distances are taken on: centred, rescaled, unit length if `unit_code`.

        On the unit sphere, L2 ranking equals cosine ranking, which ignores a latent's length; its length mostly
        tracks contrast and brightness, which similarity search should not care about. The rescaling (code_basis)
        evens out the latent's principal directions, so a few strong ones (overall tone, mostly) stop drowning
        the weak ones that tell objects apart.
        """
        if not self.unit_code:
            return z
        z = ops.matmul(z - self.code_center, self.code_basis)  # (B, code_size)
        return z / ops.maximum(ops.sqrt(ops.sum(ops.square(z), axis=1, keepdims=True)), 1e-12)

    def encode(self, x):
        """(B, S, S, C) in [0, 1] -> (B, code_size) search codes."""
        return self.search_code(self.latent(x))

    def decode(self, z, training=False):
        """(B, code_size) -> (B, S, S, C) in [0, 1]."""
        return self.decoder(z, training=training)

    def call(self, x, training=False):
        # x: (B, S, S, C) float32 in [0, 1] -> reconstruction of the clean x, same shape.
        return self.decoder(self.latent(self.corruption(x, training=training), training=training), training=training)

    # Training -------------------------------------------------------------------------------------------------

    def loss_terms(self, x, step=None) -> dict:
        """The named, weighted terms of the training loss on a clean batch x (B, S, S, C) in [0, 1].

        The penalties are divided by the pixel count because the reconstruction loss is a per-pixel mean.
        """
        if self.invariant:
            return self._invariant_terms(x, step)
        h = self.encoder(self.corruption(x, training=True), training=True)
        terms = {}
        if self.variant == "variational":
            mean, log_var = h[:, : self.code_size], h[:, self.code_size :]  # (B, code) each
            noise = keras.random.normal(ops.shape(mean), seed=self.corruption.seed_generator)  # (B, code)
            h = mean + ops.exp(0.5 * log_var) * noise
            kl = -0.5 * ops.mean(ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=1))
            terms["kl"] = self.kl_weight * kl / self._pixels
        elif self.variant == "sparse":
            terms["sparsity"] = self.sparsity * ops.mean(ops.abs(h))
        elif self.variant == "contractive":
            # ||J_f(x)||_F^2 ~= E ||f(x + e) - f(x)||^2 / sigma^2 for e ~ N(0, sigma^2): no per-sample Jacobian.
            nudge = self.contraction_sigma * keras.random.normal(ops.shape(x), seed=self.corruption.seed_generator)
            nudged = self.encoder(x + nudge, training=True)
            jacobian = ops.mean(ops.sum(ops.square(nudged - h), axis=1)) / self.contraction_sigma**2
            terms["contraction"] = self.contraction * jacobian / self._pixels
        terms["reconstruction"] = ops.mean(ops.square(self.decoder(h, training=True) - x))
        return terms

    def _invariant_terms(self, x, step) -> dict:
        # The encoder sees the clean images and their edited views in one batch (BatchNorm sees the mix it will be
        # asked about). views="two": two edited views must agree, the decoder rebuilds the clean image from the clean
        # code ("clean") or from the first view's ("view": a denoising task over everyday edits). views="one": the
        # clean image and one edited view must agree: exactly the search task (clean index, edited query), with
        # one encoder pass fewer.
        batch = ops.shape(x)[0]
        if self.views == "one":
            v1 = self.edits(x, training=True)
            h = self.encoder(ops.concatenate([x, v1], axis=0), training=True)  # (2B, code)
            h_rec = h1 = h[:batch]
            h2 = h[batch:]
        elif self.recon_source == "clean":
            v1, v2 = self.edits(x, training=True), self.edits(x, training=True)
            h = self.encoder(ops.concatenate([x, v1, v2], axis=0), training=True)  # (3B, code)
            h_rec, h1, h2 = h[:batch], h[batch : 2 * batch], h[2 * batch :]
        else:
            v1, v2 = self.edits(x, training=True), self.edits(x, training=True)
            h = self.encoder(ops.concatenate([v1, v2], axis=0), training=True)  # (2B, code)
            h1, h2 = h[:batch], h[batch:]
            h_rec = h1
        error = ops.mean(ops.square(self.decoder(h_rec, training=True) - x))
        terms = {"reconstruction": self.reconstruction_weight * self.reconstruction_scale * error}
        # The consistency term ramps in over `ramp_steps`: reconstruction first gives the codes something to keep.
        ramp = 1.0
        if self.ramp_steps > 0 and step is not None:
            ramp = ops.minimum(1.0, ops.cast(step, "float32") / float(self.ramp_steps))
        weight = self.consistency_weight * ramp
        p = self.projector(ops.concatenate([h1, h2], axis=0), training=True)  # (2B, width)
        p1, p2 = p[:batch], p[batch:]
        if self.consistency == "infonce":
            terms["contrastive"] = weight * info_nce(p1, p2, self.temperature)
        else:
            # VICReg's published weights (25, 25, 1), divided by 100 so the sum sits near the reconstruction MSE's
            # scale; consistency_weight then sets the balance.
            raw = vicreg_terms(p1, p2)
            for (name, value), w in zip(raw.items(), self.vicreg_weights):
                terms[name] = weight * w / 100.0 * value
        return terms

    def _track(self, values: dict) -> dict:
        for name, value in values.items():
            self._trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._trackers.items() if name in values}

    @property
    def metrics(self):
        # Keras resets these at every epoch, so the history holds per-epoch means of each term.
        return list(self._trackers.values())

    def train_step(self, data):
        import tensorflow as tf  # training runs on the TensorFlow backend

        x = ops.cast(data, "float32") / 255.0  # uint8 (B, S, S, C) -> [0, 1]
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x, step=self.optimizer.iterations)
            loss = ops.sum(ops.stack(list(terms.values())))
        weights = self.trainable_weights
        self.optimizer.apply(tape.gradient(loss, weights), weights)
        return self._track({"loss": loss, **terms})

    def get_config(self):
        return {**super().get_config(), **self.options.to_dict(), "reconstruction_scale": self.reconstruction_scale,
                "ramp_steps": self.ramp_steps}


def build_autoencoder(options: ModelOptions | None = None, **overrides) -> Autoencoder:
    """A new, built (weights created) autoencoder: `options` with `overrides` (fields or training's settings)."""
    model = Autoencoder(options, **overrides)
    model(ops.zeros((1, model.image_size, model.image_size, model.channels)))  # creates the weights to save them
    return model
