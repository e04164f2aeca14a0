"""Service settings as data: one place for names, defaults, environment variables and help (the README's table)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Setting:
    """A setting: config key, LOOKALIKE_* variable, default, parser and one line of help."""

    key: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    flag: str | None = None  # the `python -m search_api` option, where there is one


SETTINGS: tuple[Setting, ...] = (
    Setting("INDEX_DIR", "LOOKALIKE_INDEX", None, str, "collection folder made by `python -m indexer build`", "--index"),
    Setting("HOST", "LOOKALIKE_HOST", "127.0.0.1", str, "address to listen on (0.0.0.0 exposes it to the network)",
            "--host"),
    Setting("PORT", "LOOKALIKE_PORT", 8000, int, "TCP port", "--port"),
    Setting("THREADS", "LOOKALIKE_THREADS", 8, int, "waitress worker threads (concurrent requests)", "--threads"),
    Setting("MAX_UPLOAD_MB", "LOOKALIKE_MAX_UPLOAD_MB", 20.0, float,
            "largest accepted request body in MB; larger gets 413", "--max-upload-mb"),
    Setting("DEFAULT_K", "LOOKALIKE_DEFAULT_K", 10, int, "results per search when `k` is not given"),
    Setting("THUMBNAIL_SIZE", "LOOKALIKE_THUMBNAIL_SIZE", 256, int, "long side of thumbnails in pixels"),
    Setting("LOG_LEVEL", "LOOKALIKE_LOG_LEVEL", "INFO", str, "logging level (DEBUG, INFO, WARNING)"),
)

MAX_K = 1000
MAX_OFFSET = 10_000


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
        except ValueError:
            raise ValueError(f"{setting.env}={raw!r} is not a valid {setting.parse.__name__}") from None
    return config
