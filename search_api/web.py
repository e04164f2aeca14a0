"""The query page."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("web", __name__)


@bp.get("/")
def index():
    """Pick, drop or paste an image; see its neighbours; click one to search by it."""
    engine = current_app.extensions["lookalike.engine"]
    return render_template(
        "index.html",
        images=engine.images,
        model=engine.model_id,
        max_upload_bytes=current_app.config["MAX_CONTENT_LENGTH"],
        default_k=current_app.config["DEFAULT_K"],
    )
