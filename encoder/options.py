"""The model's and training's options as data: one dataclass each, the single source of their defaults and help.

`Autoencoder` takes a `ModelOptions` (and returns it from `get_config`), `encoder.train` a `TrainConfig` (a
`ModelOptions` plus the training budget), and `python -m indexer` generates its training flags and their help from
the fields marked `flag=True`. No TensorFlow here: the CLI reads this module before it imports anything heavy.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from encoder.variants import DEFAULT_VARIANT, VARIANTS

AUTO_EPOCHS = 30  # passes over the images in the automatic step budget (bounded by min_steps and max_steps)
MIN_STEPS, MAX_STEPS = 1000, 2500  # the automatic budget's bounds


# Parsers: a string in, a checked value out, or ValueError saying what is expected (the caller names the option).
def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """A parser of whole numbers from `low` to `high` (no upper bound when None)."""
    expected = f"a whole number from {low} to {high}" if high is not None else f"a whole number, at least {low}"

    def parse(raw: str) -> int:
        text = raw.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,12}", text):
            raise ValueError(f"expected {expected}")
        value = int(text)
        if value < low or (high is not None and value > high):
            raise ValueError(f"expected {expected}")
        return value

    parse.__name__ = "whole number"  # what argparse calls the value when it reports a bad one
    return parse


def _number(raw: str, expected: str, low: float, high: float = math.inf, above: bool = False) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected {expected}") from None
    if not math.isfinite(value) or value < low or value > high or (above and value == low):
        raise ValueError(f"expected {expected}")
    return value


def positive_number(raw: str) -> float:
    """A finite number above zero."""
    return _number(raw, "a number above 0", 0.0, above=True)


def non_negative_number(raw: str) -> float:
    """A finite number, zero or more."""
    return _number(raw, "a number, 0 or more", 0.0)


def fraction(raw: str) -> float:
    """A number from 0 to 1."""
    return _number(raw, "a number from 0 to 1", 0.0, 1.0)


def option(default: Any, help: str, flag: bool = False, parse: Callable[[str], Any] | None = None,
           choices: tuple[str, ...] | None = None, shown: str | None = None, metavar: str | None = None) -> Any:
    """A dataclass field with its help; `flag` makes it an `indexer build/train` option, `shown` its default's text."""
    metadata = {"help": help, "flag": flag, "parse": parse, "choices": choices, "shown": shown, "metavar": metavar}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def default_of(f: Field) -> Any:
    """A field's default value (calling its factory when it has one)."""
    if f.default is MISSING and f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


@dataclass
class ModelOptions:
    """What shapes an autoencoder: its input, code, family member and the knobs of its loss; in `encoder.json`."""

    # 32: on the demo photos 48 px ranked better (P@10 0.364 against 0.334-0.348) but trained 2x longer (331 s
    # for 1,000 steps on a 2-core AVX-512 machine); 64 px costs 4x the steps' time for no measured gain.
    image_size: int = option(32, "side in pixels the model sees; smaller images: their own", True, whole_number(8))
    channels: int = option(3, "colour channels: 3 for RGB, 1 for greyscale")
    code_size: int = option(30, "numbers per image code", True, whole_number(1))
    variant: str = option(DEFAULT_VARIANT, "autoencoder family member; see the README", True, choices=VARIANTS)
    # Denoising corruption. Noise alone measured best (benchmarks/quality.py): against noise 0.1 + occlusion 0.5 +
    # salt-and-pepper 0.02 it gained on Fashion-MNIST P@10 (0.830 vs 0.827), MNIST (0.971 vs 0.969), and MNIST
    # reconstruction (2.88 vs 4.03), losing only occlusion recall; zoom 0.15 + brightness 0.2 cost 0.004 P@10.
    noise_std: float = option(0.15, "denoising: gaussian noise sigma in [0, 1] pixel units", True, fraction)
    occlusion: float = option(0.0, "denoising: probability of an occlusion box", True, fraction)
    salt_pepper: float = option(0.0, "denoising: share of pixels set black or white", True, fraction)
    zoom: float = option(0.0, "denoising: up to this share of each side cropped away and resized back", True,
                         fraction)
    brightness: float = option(0.0, "denoising: brightness scaled by up to +-this", True, fraction)
    sparsity: float = option(1e-3, "sparse: weight of the L1 penalty on the code")
    contraction: float = option(1e-3, "contractive: weight of the Jacobian penalty")
    contraction_sigma: float = option(0.05, "contractive: size of the input perturbation estimating the Jacobian")
    kl_weight: float = option(0.05, "variational: weight of the KL term")
    unit_code: bool = option(True, "search codes centred, rescaled and unit length (L2 ranking = cosine ranking)")
    normalise: bool | None = option(None, "BatchNorm in the conv encoder and decoder (None: for the invariant variant)")
    width: int = option(32, "filters of the first conv level (doubling at each level)")
    pooling: str = option("flatten", "how the last feature map becomes the code: flatten (layout kept) or average")
    shortcut: bool | None = option(None, "a linear coarse-image path beside the conv layers (None: for invariant)")
    consistency: str = option("infonce", "invariant: the agreement term, infonce or vicreg")
    consistency_weight: float = option(1.0, "invariant: weight of the agreement term against reconstruction")
    vicreg_weights: tuple[float, float, float] = option((25.0, 25.0, 1.0),
                                                        "vicreg: weights of invariance, variance, covariance")
    temperature: float = option(0.1, "invariant, infonce: softmax temperature")
    projector_width: int = option(256, "invariant: width of the projection head the agreement term acts on")
    # MNIST is rebuilt at 4.5-7.4 H&S units with 5, 8+ with 1; CIFAR-10 P@10 is 0.038 better with 1.
    reconstruction_weight: float = option(5.0, "invariant: weight of reconstruction against the agreement term",
                                          True, non_negative_number)
    recon_source: str = option("clean", "invariant: rebuild from the clean image's code (clean) or a view's (view)")
    views: str = option("two", "invariant: two edited views agree (two), or the clean image and one view (one)")
    edits: dict = option({}, "invariant: EditStrengths overrides")
    seed: int = option(0, "random seed of initialisation, batches and edits", True, whole_number(0))

    def __post_init__(self) -> None:
        # Checked here rather than in the model so that a bad value fails before TensorFlow loads.
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        for name, allowed in (("consistency", ("vicreg", "infonce")), ("recon_source", ("clean", "view")),
                              ("views", ("one", "two")), ("pooling", ("flatten", "average", "attention"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        self.vicreg_weights = tuple(float(w) for w in self.vicreg_weights)  # type: ignore[assignment]  # JSON: list

    def model_options(self) -> ModelOptions:
        """Only the model's part (a TrainConfig is also a ModelOptions)."""
        return ModelOptions(**{f.name: getattr(self, f.name) for f in fields(ModelOptions)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values, for `get_config` and `encoder.json`."""
        values = asdict(self)
        values["vicreg_weights"] = list(self.vicreg_weights)
        return values


@dataclass
class TrainConfig(ModelOptions):
    """Everything that shapes a training run: the model's options plus the budget and optimiser; in `encoder.json`."""

    steps: int = option(0, "optimiser steps to train for", True, whole_number(1),
                        shown=f"{AUTO_EPOCHS} passes over the images, at least {MIN_STEPS} and at most {MAX_STEPS}")
    epochs: int = option(0, "training passes over the images, instead of --steps", True, whole_number(1),
                         shown="unset")
    min_steps: int = option(MIN_STEPS, "the automatic budget's least steps: a small collection still needs that many")
    max_steps: int = option(MAX_STEPS, "the automatic budget's most steps: a large one has learnt what 30 numbers hold")
    batch_size: int = option(128, "images per optimiser step (fewer for a small collection)", True, whole_number(2))
    learning_rate: float = option(2e-3, "Adam's peak learning rate (cosine decay after the warm-up)", True,
                                  positive_number)
    warmup: float = option(0.03, "share of the steps over which the learning rate ramps up from zero")
    validation_fraction: float = option(0.1, "share of the images held out to check the reconstruction loss")
    max_held_out: int = option(1000, "most held-out images (enough to measure a loss; the rest train)")
    time_budget: float = option(0.0, "also stop training after this many seconds (0: none, so that the model does "
                                     "not depend on the machine's speed)", True, non_negative_number,
                                shown="no limit", metavar="SECONDS")
    # Before unit length, each principal direction of the training latents is scaled by its spread^-whitening:
    # 0 leaves them as trained, 1 is full whitening (every direction weighs the same, noise included). 0.5 against
    # 0 on the same models (benchmarks/quality.py --whitening 0 1): P@10 +0.020 demo, +0.009 CIFAR-10, +0.006
    # Fashion-MNIST and MNIST; 1 was worse than 0.5 on all four and cost the 28x28 sets' crop recall.
    whitening: float = option(0.5, "search codes: each principal direction scaled by its spread^-POWER before unit "
                                   "length; 0 only centres, 1 whitens fully", True, fraction, metavar="POWER")
    ramp: float = option(0.0, "invariant: share of the steps over which the agreement term ramps in")

    def batch_for(self, images: int) -> int:
        """The batch size for a collection: the configured one, smaller when it would leave few steps per pass."""
        return int(max(16, min(self.batch_size, images // 16 or 16)))

    def steps_for(self, images: int) -> int:
        """The step budget for `images` training images: `steps`, else `epochs` passes, else the automatic one.

        Automatic: AUTO_EPOCHS passes, but at least `min_steps` (a small collection still needs that many updates
        to learn) and at most `max_steps` (a large one has learnt what a 30-number code can hold well before).
        """
        if self.steps:
            return int(self.steps)
        per_pass = max(1, images // min(self.batch_for(images), images))
        if self.epochs:
            return int(self.epochs * per_pass)
        return int(min(self.max_steps, max(self.min_steps, AUTO_EPOCHS * per_pass)))


def flag_fields(cls: type = TrainConfig) -> list[Field]:
    """The fields of `cls` offered as command-line options, in declaration order."""
    return [f for f in fields(cls) if f.metadata.get("flag")]


def flag_help(f: Field) -> str:
    """A flag's help line: the field's help and its default, both from the dataclass."""
    default = default_of(f)
    shown = f.metadata.get("shown") or (f"{default:g}" if isinstance(default, float) else str(default))
    return f"{f.metadata['help']} ({shown})"
