"""Server settings as data: one place for names, defaults, environment variables and help (the README's table)."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from encoder.options import non_negative_number, positive_number, whole_number
from indexer.settings import RUNTIME, Setting
from indexer.settings import from_environment as read_settings

MAX_K = 1000
MAX_OFFSET = 10_000
MAX_IMAGES_PER_REQUEST = 100  # images in one POST /api/images
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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


PILLOW_MAX_PIXELS = 89_478_485  # Pillow's own default for Image.MAX_IMAGE_PIXELS (a quarter GB of 24-bit pixels)

SETTINGS: tuple[Setting, ...] = (
    Setting("INDEX_DIR", "LOOKALIKE_INDEX", None, str, "collection folder made by `python -m indexer build`",
            "--index"),
    Setting("HOST", "LOOKALIKE_HOST", "127.0.0.1", str, "address to listen on (0.0.0.0 exposes it to the network)",
            "--host"),
    Setting("PORT", "LOOKALIKE_PORT", 8000, whole_number(1, 65535), "TCP port", "--port"),
    Setting("THREADS", "LOOKALIKE_THREADS", 8, whole_number(1, 1000), "waitress worker threads (concurrent requests)",
            "--threads"),
    Setting("COMPUTE_THREADS", "LOOKALIKE_COMPUTE_THREADS", 0, whole_number(0, 1000),
            "threads encoding queries (0: one per core); queries arriving together share one batch"),
    RUNTIME,
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
            "disabled. Environment only, so that it never shows in a process list", secret=True),
    Setting("LOG_LEVEL", "LOOKALIKE_LOG_LEVEL", "INFO", log_level, "logging level (DEBUG, INFO, WARNING)"),
    Setting("FOLLOW_SECONDS", "LOOKALIKE_FOLLOW_SECONDS", 2.0, non_negative_number,
            "how often the server looks for vectors a build has published, and switches to them without a restart "
            "(0: never; restart to see a build)", "--follow-seconds"),
)


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Defaults overridden by LOOKALIKE_* variables; a malformed value raises ValueError naming the variable."""
    return read_settings(SETTINGS, environ)
