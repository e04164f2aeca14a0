"""The app factory: settings, the Engine (loaded once), blueprints and the error envelope."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from search_api import errors, settings

log = logging.getLogger(__name__)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app; `test_config` overrides settings from the environment."""
    from encoder.runtime import configure_runtime, configure_threads
    from indexer.vectors import set_threads
    from search_api import api, metrics, web
    from search_api.engine import Engine

    app = Flask(__name__)
    app.config.update(settings.from_environment())
    app.config.update(test_config or {})
    if not app.config.get("INDEX_DIR"):
        raise ValueError("no collection given: pass --index DIR or set LOOKALIKE_INDEX")
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_UPLOAD_MB"] * 1_000_000)
    from PIL import Image

    # Process-wide, like the thread settings: Pillow reads it at every open, the indexer's decoding included.
    Image.MAX_IMAGE_PIXELS = app.config["MAX_PIXELS"]
    configure_threads(app.config["COMPUTE_THREADS"])  # before the engine starts TensorFlow
    configure_runtime(app.config["RUNTIME"])
    set_threads(app.config["SEARCH_THREADS"])
    app.json.sort_keys = False  # type: ignore[attr-defined]  # DefaultJSONProvider's; keep results first
    engine = app.extensions["lookalike.engine"] = Engine(app.config["INDEX_DIR"], app.config["THUMBNAIL_SIZE"],
                                                         writable=bool(app.config.get("API_TOKEN")))
    engine.start_following(app.config["FOLLOW_SECONDS"])  # pick up what builds publish, without a restart
    errors.register(app)
    metrics.register(app, engine)
    app.register_blueprint(api.bp)
    app.register_blueprint(web.bp)
    return app
