"""Settings as data: the `Setting` record, reading a table of them from the environment, and the indexer's table.

The server's table (search_api.settings) is built from the same record; the README's settings tables are checked
against both by tests/test_settings.py.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from encoder.options import whole_number
from encoder.runtime import DEFAULT_RUNTIME, inference_runtime


@dataclass(frozen=True)
class Setting:
    """A setting: config key, LOOKALIKE_* variable, default, parser and one line of help."""

    key: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    flag: str | None = None  # the command-line option, where there is one
    secret: bool = False  # never echoed, even when malformed


def from_environment(table: tuple[Setting, ...], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Defaults overridden by LOOKALIKE_* variables; a malformed value raises ValueError naming the variable."""
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for setting in table:
        raw = environ.get(setting.env)
        if raw is None or raw == "":
            config[setting.key] = setting.default
            continue
        try:
            config[setting.key] = setting.parse(raw)
        except ValueError as why:
            shown = "<hidden>" if setting.secret else repr(raw[:40])
            raise ValueError(f"{setting.env}={shown}: {why}") from None
    return config


def argument_type(parse: Callable[[str], Any], name: str, echo: bool = False) -> Callable[[str], Any]:
    """`parse` for argparse: its ValueError becomes a one-line usage error naming the flag (and, with `echo`, the
    value given)."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as why:
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: {why}" if echo else str(why)) from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


ENGINES = ("local", "ray")


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A parser accepting only `choices`."""
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def sample_size(raw: str) -> int | None:
    """'all' (None: every image) or a whole number of images, 0 or more."""
    text = raw.strip().lower()
    if text == "all":
        return None
    try:
        return whole_number(0)(text)
    except ValueError:
        raise ValueError("expected 'all' or a whole number, at least 0") from None


# Shared by the indexer's table and the server's: the process-wide choice encoder.runtime.configure_runtime makes.
RUNTIME = Setting("RUNTIME", "LOOKALIKE_RUNTIME", DEFAULT_RUNTIME, inference_runtime,
                  "what runs the encoder: onnx (ONNX Runtime, the fast path) or tensorflow (the Keras graphs "
                  "themselves)")

# `indexer build` and `indexer train`. Their flags override these; the training flags come from encoder.options.
SETTINGS: tuple[Setting, ...] = (
    Setting("WORKERS", "LOOKALIKE_WORKERS", 0, whole_number(0, 1000),
            "decoding processes while indexing (0: one per core); they take turns with TensorFlow's encoding "
            "threads", "--workers"),
    Setting("MAX_TRAIN_IMAGES", "LOOKALIKE_MAX_TRAIN_IMAGES", 10_000, whole_number(1),
            "train on a random sample of at most this many images", "--max-train-images"),
    Setting("COMMIT_BATCH", "LOOKALIKE_COMMIT_BATCH", 1024, whole_number(1),
            "images committed per transaction: the most an interruption can cost", "--batch"),
    Setting("ENGINE", "LOOKALIKE_ENGINE", "local", one_of(ENGINES),
            "where decoding and encoding run: local (processes on this machine) or ray (a Ray cluster; the "
            "optional extra)", "--engine"),
    Setting("RAY_ADDRESS", "LOOKALIKE_RAY_ADDRESS", "", str,
            "the Ray cluster to join with --engine ray, as `ray start` printed it (empty: start a local instance)",
            "--ray-address"),
    Setting("RAY_ENCODERS", "LOOKALIKE_RAY_ENCODERS", 0, whole_number(0, 100_000),
            "encoder actors with --engine ray, one CPU each (0: half the cluster's CPUs)", "--ray-encoders"),
    Setting("ERROR_SAMPLE", "LOOKALIKE_ERROR_SAMPLE", None, sample_size,
            "images whose reconstruction error a build measures: all (outliers rank the whole collection) or a "
            "number, for a uniform sample; the decoder's pass costs 3-4x the encoder's, so a sample makes indexing "
            "small images several times faster", "--error-sample"),
    RUNTIME,
)

DEFAULTS: dict[str, Any] = {s.key: s.default for s in SETTINGS}
