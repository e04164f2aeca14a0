"""The query page."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, render_template

bp = Blueprint("web", __name__)

# The page loads nothing from elsewhere (it must work offline); the policy makes that a rule the browser enforces.
# blob: is the preview of a picked, dropped or pasted file; data: the empty favicon.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])


def _asset_version(static_folder: str) -> str:
    """A token that changes when a script or the stylesheet does: a browser never runs an old script on a new page."""
    folder = Path(static_folder)
    names = ("app.js", "views.js", "style.css")
    stamps = [int((folder / name).stat().st_mtime) for name in names if (folder / name).exists()]
    return format(max(stamps, default=0), "x")


@bp.get("/")
def index():
    """Pick, drop or paste an image; see its neighbours; click one to search by it."""
    engine = current_app.extensions["lookalike.engine"]
    response = current_app.make_response(render_template(
        "index.html",
        images=engine.images,
        model=engine.model_id,
        max_upload_bytes=current_app.config["MAX_CONTENT_LENGTH"],
        default_k=current_app.config["DEFAULT_K"],
        asset_version=_asset_version(current_app.static_folder or ""),
    ))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
