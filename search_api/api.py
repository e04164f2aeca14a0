"""JSON routes under /api."""
from __future__ import annotations

import hmac
import re

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from indexer.duplicates import parse_check, parse_threshold
from indexer.projection import DEFAULT_METHOD, METHODS
from search_api.engine import Engine, NotFound, SearchResult
from search_api.errors import ApiError
from search_api.settings import MAX_IMAGES_PER_REQUEST, MAX_K, MAX_OFFSET

bp = Blueprint("api", __name__, url_prefix="/api")


def engine() -> Engine:
    """The app's Engine, loaded once by create_app."""
    return current_app.extensions["lookalike.engine"]


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() would also take " 5", "1_0", "+5" and non-ASCII digits.
    if not re.fullmatch(r"-?[0-9]+", raw):
        raise ApiError(400, "invalid_parameter", f"{name} must be a whole number, got {raw[:40]!r}")
    # A number of more than 9 digits is out of range whatever it is; no need to convert it to know.
    if len(raw.lstrip("-").lstrip("0")) > 9 or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be between {low} and {high}, got {raw[:40]}")
    return int(raw)


def _bool_arg(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false, got {raw[:40]!r}")


def _paging() -> tuple[int, int]:
    return (_int_arg("k", current_app.config["DEFAULT_K"], 1, MAX_K), _int_arg("offset", 0, 0, MAX_OFFSET))


def _uploaded_image() -> bytes:
    """The image from multipart field `image`, or else the raw body."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise ApiError(400, "missing_image", "send the image as multipart field 'image' or as the request body")
        data = upload.read()
    else:
        data = request.get_data(cache=False)
    if not data:
        raise ApiError(400, "missing_image", "the image is empty")
    return data


def significant(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant digits: a far neighbour's tiny score stays above 0, as documented."""
    return float(f"{value:.{digits}g}")


def _response(result: SearchResult, k: int, offset: int) -> Response:
    served = result.served  # the generation that answered presents its hits
    percentiles = served.percentiles([h.distance for h in result.hits]) if result.hits else []
    body = {
        "results": [
            {"id": h.id, "path": h.path, "distance": round(h.distance, 6),
             "score": significant(served.score(h.distance)), "percentile": share,
             "copy": h.copy, "thumbnail": f"/api/images/{h.id}/thumbnail"}
            for h, share in zip(result.hits, percentiles)
        ],
        "took_ms": round(result.took_ms, 2),
        "k": k,
        "offset": offset,
        "images": len(served.collection),
        "model": served.collection.encoder.model_id,
        "generation": served.generation,
    }
    if result.query is not None:
        body["query"] = result.query
    return jsonify(body)


def _is_id(raw: str) -> bool:
    """ASCII digits that fit an SQLite integer (str.isdigit alone also takes '²' and other scripts' digits)."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 18


def _image_id(raw: str) -> int:
    # Ids are matched as strings by the route so that a malformed id is a 404 in our envelope, like any unknown id.
    if not _is_id(raw):
        raise ApiError(404, "not_found", f"no image with id {raw[:40]!r}")
    return int(raw)


@bp.post("/search")
def search_by_image():
    """Neighbours of an uploaded image."""
    k, offset = _paging()
    unusual = _bool_arg("unusual", True)
    return _response(engine().search_image(_uploaded_image(), k, offset, unusual), k, offset)


@bp.get("/search")
def search_by_id():
    """Neighbours of an indexed image, given as ?id=."""
    raw = request.args.get("id")
    if raw is None:
        raise ApiError(400, "missing_parameter", "give the id of an indexed image as ?id=, or POST an image")
    if not (raw.isascii() and raw.isdigit()):
        raise ApiError(400, "invalid_parameter", f"id must be a whole number, got {raw[:40]!r}")
    k, offset = _paging()
    if not _is_id(raw):
        raise ApiError(404, "not_found", f"no image with id {raw[:40]}")
    return _response(engine().search_id(int(raw), k, offset), k, offset)


@bp.get("/images/<raw_id>")
def image(raw_id: str):
    """The original file of an indexed image."""
    path = engine().image_path(_image_id(raw_id))
    try:
        response = send_file(path, max_age=3600, conditional=True)
    except OSError:  # removed since image_path looked: Werkzeug's own open, not the engine's
        raise NotFound(f"the file of image {raw_id} is no longer available") from None
    response.headers["X-Content-Type-Options"] = "nosniff"  # served as the image type its name says, never sniffed
    return response


@bp.get("/images/<raw_id>/thumbnail")
def thumbnail(raw_id: str):
    """A JPEG thumbnail of an indexed image."""
    response = Response(engine().thumbnail(_image_id(raw_id)), mimetype="image/jpeg")
    response.cache_control.max_age = 3600
    return response


@bp.get("/images/<raw_id>/reconstruction")
def reconstruction(raw_id: str):
    """A PNG of what the model makes of an indexed image (at the model's input size)."""
    response = Response(engine().reconstruction(_image_id(raw_id)), mimetype="image/png")
    response.cache_control.max_age = 3600
    return response


@bp.post("/reconstruction")
def reconstruct_upload():
    """A PNG of what the model makes of an uploaded image."""
    return Response(engine().reconstruct(_uploaded_image()), mimetype="image/png")


def _threshold() -> float | None:
    raw = request.args.get("threshold", "auto")
    try:
        if len(raw) > 40:  # no distance needs more characters; and none is echoed back longer
            raise ValueError
        return parse_threshold(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter",
                       f"threshold must be 'auto' or a distance of 0 or more, got {raw[:40]!r}") from None


@bp.get("/duplicates")
def duplicates():
    """Groups of near-duplicate images, largest first; ?threshold=auto|D, ?check=pixels|none, ?limit= groups."""
    threshold = _threshold()
    raw = request.args.get("check", "")
    try:
        check = parse_check(raw)
    except ValueError as why:
        raise ApiError(400, "invalid_parameter", f"check: {why}, got {raw[:40]!r}") from None
    limit = _int_arg("limit", 100, 1, MAX_K)
    return jsonify({**engine().duplicates(threshold, limit, check), "images": engine().images})


@bp.get("/outliers")
def outliers():
    """The images the model rebuilds worst, worst first; ?n= how many."""
    return jsonify(engine().outliers(_int_arg("n", 50, 1, MAX_K)))


@bp.get("/map")
def collection_map():
    """Every image's place on a 2-D map of the codes; ?method=pca|umap."""
    method = request.args.get("method") or DEFAULT_METHOD
    if method not in METHODS:
        raise ApiError(400, "invalid_parameter", f"method must be one of {', '.join(METHODS)}, got {method[:40]!r}")
    return jsonify(engine().map(method))


def _require_token() -> None:
    """Writes need `Authorization: Bearer <LOOKALIKE_API_TOKEN>`; without a configured token they are off."""
    expected = current_app.config.get("API_TOKEN")
    if not expected:
        raise ApiError(403, "writes_disabled", "writes are disabled on this server (set LOOKALIKE_API_TOKEN)")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "unauthorized", "send the API token as 'Authorization: Bearer <token>'",
                       {"WWW-Authenticate": 'Bearer realm="lookalike"'})
    # Constant time: how long a comparison takes must not say how much of a guess was right.
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError(403, "forbidden", "the API token is not valid")
    if engine().writer is None:
        raise ApiError(403, "writes_disabled", "this collection records no image folder to store images in; "
                       "re-run `indexer build`")


def _uploaded_images() -> list[tuple[str, bytes]]:
    """Every multipart field `image` (one or more), or else the raw body as one image."""
    if request.mimetype == "multipart/form-data":
        files = request.files.getlist("image")
        if not files:
            raise ApiError(400, "missing_image", "send the images as multipart fields 'image'")
        if len(files) > MAX_IMAGES_PER_REQUEST:
            raise ApiError(413, "too_large", f"at most {MAX_IMAGES_PER_REQUEST} images per request")
        uploads = [(f.filename or f"image {i + 1}", f.read()) for i, f in enumerate(files)]
    else:
        uploads = [("body", request.get_data(cache=False))]
    for i, (_, data) in enumerate(uploads):
        if not data:
            raise ApiError(400, "missing_image", f"image {i + 1} is empty")
    return uploads


@bp.post("/images")
def add_images():
    """Add one or more images to the collection (token required)."""
    _require_token()
    added = engine().add_images(_uploaded_images())
    body = {"added": [{"id": a.id, "path": a.path, "new": a.new, "thumbnail": f"/api/images/{a.id}/thumbnail"}
                      for a in added], "images": engine().images}
    return jsonify(body), 201 if any(a.new for a in added) else 200


@bp.delete("/images/<raw_id>")
def delete_image(raw_id: str):
    """Remove an image from the collection (token required)."""
    _require_token()
    image_id = _image_id(raw_id)
    path = engine().remove_image(image_id)
    return jsonify({"deleted": image_id, "path": path, "images": engine().images})


@bp.get("/health")
def health():
    """Liveness and collection size."""
    return jsonify({"status": "ok", "images": engine().images})


@bp.get("/info")
def info():
    """The collection and the model that made its codes."""
    return jsonify(engine().describe())
