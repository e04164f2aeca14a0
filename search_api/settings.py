"""Service settings as data: one place for names, defaults, environment variables and help (the README's table)."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

MAX_K = 1000
MAX_OFFSET = 10_000
MAX_IMAGES_PER_REQUEST = 100  # images in one POST /api/images
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# Parsers: a string in, a checked value out, or ValueError saying what is expected (the caller names the setting).
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

    return parse


def positive_number(raw: str) -> float:
    """A finite number above zero."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number above 0") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a number above 0")
    return value


def log_level(raw: str) -> str:
    """A logging level name, upper-cased."""
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level


def api_token(raw: str) -> str:
    """A bearer token: at least 16 printable ASCII characters without spaces (a guessable token is no lock)."""
    token = raw.strip()
    if len(token) < 16 or not re.fullmatch(r"[\x21-\x7e]+", token):
        raise ValueError("expected at least 16 printable ASCII characters, no spaces")
    return token


@dataclass(frozen=True)
class Setting:
    """A setting: config key, LOOKALIKE_* variable, default, parser and one line of help."""

    key: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    flag: str | None = None  # the `python -m search_api` option, where there is one


PILLOW_MAX_PIXELS = 89_478_485  # Pillow's own default for Image.MAX_IMAGE_PIXELS (a quarter GB of 24-bit pixels)

SETTINGS: tuple[Setting, ...] = (
    Setting("INDEX_DIR", "LOOKALIKE_INDEX", None, str, "collection folder made by `python -m indexer build`", "--index"),
    Setting("HOST", "LOOKALIKE_HOST", "127.0.0.1", str, "address to listen on (0.0.0.0 exposes it to the network)",
            "--host"),
    Setting("PORT", "LOOKALIKE_PORT", 8000, whole_number(1, 65535), "TCP port", "--port"),
    Setting("THREADS", "LOOKALIKE_THREADS", 8, whole_number(1, 1000), "waitress worker threads (concurrent requests)",
            "--threads"),
    Setting("COMPUTE_THREADS", "LOOKALIKE_COMPUTE_THREADS", 0, whole_number(0, 1000),
            "TensorFlow threads encoding queries (0: one per core); queries arriving together share one batch"),
    Setting("SEARCH_THREADS", "LOOKALIKE_SEARCH_THREADS", 1, whole_number(0, 1000),
            "FAISS OpenMP threads per search (0: one per core); 1 because concurrent requests already fill the cores"),
    Setting("MAX_UPLOAD_MB", "LOOKALIKE_MAX_UPLOAD_MB", 20.0, positive_number,
            "largest accepted request body in MB; larger gets 413", "--max-upload-mb"),
    Setting("MAX_PIXELS", "LOOKALIKE_MAX_PIXELS", PILLOW_MAX_PIXELS, whole_number(1),
            "largest image accepted, in pixels (the decompression-bomb guard); decoding one costs about 4 bytes a "
            "pixel, so this times --threads bounds the memory uploads can take", "--max-pixels"),
    Setting("DEFAULT_K", "LOOKALIKE_DEFAULT_K", 10, whole_number(1, MAX_K), "results per search when `k` is not given"),
    Setting("THUMBNAIL_SIZE", "LOOKALIKE_THUMBNAIL_SIZE", 256, whole_number(1), "long side of thumbnails in pixels"),
    Setting("API_TOKEN", "LOOKALIKE_API_TOKEN", None, api_token,
            "bearer token that allows writes (`POST /api/images`, `DELETE /api/images/ID`); unset: writes are "
            "disabled. Environment only, so that it never shows in a process list"),
    Setting("LOG_LEVEL", "LOOKALIKE_LOG_LEVEL", "INFO", log_level, "logging level (DEBUG, INFO, WARNING)"),
)


def from_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Defaults overridden by LOOKALIKE_* variables; a malformed value raises ValueError naming the variable."""
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None or raw == "":
            config[setting.key] = setting.default
            continue
        try:
            config[setting.key] = setting.parse(raw)
        except ValueError as why:
            shown = "<hidden>" if setting.key == "API_TOKEN" else repr(raw[:40])
            raise ValueError(f"{setting.env}={shown}: {why}") from None
    return config
