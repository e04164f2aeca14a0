"""SearchClient: a small Python client for a lookalike server. Depends on requests only (no TF, FAISS or Flask)."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import requests

__all__ = ["SearchClient", "SearchError", "Hit", "SearchResponse"]

# Codes for error answers that do not carry the server's envelope (waitress's own 413, a proxy's 502, ...).
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "too_large", 429: "too_many_requests", 500: "internal_error",
                 502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}
# PIL modes a PNG holds as they are; anything else (CMYK, YCbCr, HSV, LAB, F) is sent as RGB.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})

Query = str | os.PathLike | bytes | bytearray | BinaryIO | Any  # Any: a PIL image or an (H, W, C) uint8 array


class SearchError(Exception):
    """An error answer from the server (or no answer): HTTP status, machine code, message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Hit:
    """One result: the image's id, its path inside the indexed folder, code distance and score in (0, 1], whether
    it is an edited copy of the query (put first by the server's copy check), and the distance's percentile: the
    share (0-100) of the collection's nearest-neighbour pairs that are further apart."""

    id: int
    path: str
    distance: float
    score: float
    thumbnail: str
    copy: bool = False
    percentile: float | None = None  # None from a server older than the percentile


@dataclass(frozen=True)
class SearchResponse:
    """A whole answer: the hits plus timing and the model that made the codes; iterates and indexes as its hits."""

    hits: list[Hit]
    took_ms: float
    k: int
    offset: int
    images: int
    model: str
    query: dict[str, Any] | None = None

    def __iter__(self):
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i):
        return self.hits[i]


def _as_bytes(image: Query) -> bytes:
    """The bytes to upload for any supported query type."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as fh:
            return fh.read()
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("open the file in binary mode ('rb')")
        return bytes(data)
    if hasattr(image, "save") and hasattr(image, "mode"):  # PIL image: sent losslessly
        out = io.BytesIO()
        picture: Any = image  # a PIL image, known by its methods: the client does not import Pillow for this
        (picture if picture.mode in _PNG_MODES else picture.convert("RGB")).save(out, format="PNG")
        return out.getvalue()
    if hasattr(image, "__array_interface__") or hasattr(image, "shape"):  # numpy array
        import numpy as np
        from PIL import Image  # only needed for arrays; Pillow is light

        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise TypeError(f"arrays must be (H, W) or (H, W, C) uint8, got {array.shape} {array.dtype}")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        out = io.BytesIO()
        Image.fromarray(array).save(out, format="PNG")
        return out.getvalue()
    raise TypeError(f"cannot send a {type(image).__name__}: give a path, bytes, a binary file, a PIL image or an array")


class SearchClient:
    """Talks to `python -m search_api`; raises SearchError for any error answer."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 10.0,
                 session: requests.Session | None = None, token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.token = token  # LOOKALIKE_API_TOKEN of the server, for add_images and delete_image

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send a request; turn any error answer (or no answer) into SearchError."""
        try:
            response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise SearchError(0, "timeout", f"no answer from {self.base_url} within {self.timeout} s: {exc}") from None
        except requests.RequestException as exc:
            raise SearchError(0, "connection_error", f"cannot reach {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                status, code, message = int(error["status"]), str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):  # not our envelope: a proxy, or waitress itself
                status = response.status_code
                code = _STATUS_CODES.get(status, "http_error")
                message = response.text[:200].strip() or response.reason or code
            raise SearchError(status, code, message)
        return response

    def _request(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
        try:
            return dict(response.json())
        except (ValueError, TypeError):
            raise SearchError(response.status_code, "bad_response", "the server did not answer with JSON") from None

    @staticmethod
    def _parse(body: dict[str, Any]) -> SearchResponse:
        hits = [Hit(int(r["id"]), r["path"], float(r["distance"]), float(r["score"]), r["thumbnail"],
                    bool(r.get("copy", False)), None if r.get("percentile") is None else float(r["percentile"]))
                for r in body["results"]]
        return SearchResponse(hits, float(body["took_ms"]), int(body["k"]), int(body["offset"]), int(body["images"]),
                              body["model"], body.get("query"))

    def search(self, image: Query, k: int = 10, offset: int = 0, unusual: bool = True) -> SearchResponse:
        """Nearest neighbours of an image given as a path, bytes, a binary file, a PIL image or a uint8 array.

        `unusual=False` skips the out-of-domain check (the model's decoder pass): `query` is then None."""
        params: dict[str, Any] = {"k": k, "offset": offset} | ({} if unusual else {"unusual": "false"})
        # The raw image as the body: the server skips a multipart parse (~0.5 ms of its CPU per query).
        return self._parse(self._request("POST", "/api/search", params=params, data=_as_bytes(image),
                                         headers={"Content-Type": "application/octet-stream"}))

    def search_by_id(self, image_id: int, k: int = 10, offset: int = 0) -> SearchResponse:
        """Nearest neighbours of an indexed image (the image itself left out)."""
        return self._parse(self._request("GET", "/api/search", params={"id": image_id, "k": k, "offset": offset}))

    def health(self) -> dict[str, Any]:
        """{'status': 'ok', 'images': N}."""
        return self._request("GET", "/api/health")

    def info(self) -> dict[str, Any]:
        """The collection's size and model."""
        return self._request("GET", "/api/info")

    def thumbnail(self, image_id: int) -> bytes:
        """JPEG bytes of an indexed image's thumbnail."""
        return self._send("GET", f"/api/images/{int(image_id)}/thumbnail").content

    def image(self, image_id: int) -> bytes:
        """The original file of an indexed image."""
        return self._send("GET", f"/api/images/{int(image_id)}").content

    def duplicates(self, threshold: float | None = None, limit: int = 100, check: str = "pixels") -> dict[str, Any]:
        """Groups of near-duplicates, largest first: {'threshold', 'threshold_percentile', 'suggested_threshold',
        'check', 'groups': [{'members': [{'id', 'path', 'distance', 'match', 'thumbnail'}]}], ...}; threshold None:
        the suggested one; check 'pixels' confirms copies pixel by pixel, 'none' groups by code distance alone."""
        params = {"threshold": "auto" if threshold is None else repr(float(threshold)), "limit": limit,
                  "check": check}
        return self._request("GET", "/api/duplicates", params=params)

    def outliers(self, n: int = 50) -> list[dict[str, Any]]:
        """The `n` images the model rebuilds worst: [{'id', 'path', 'reconstruction_error', 'error_percentile'}]."""
        return list(self._request("GET", "/api/outliers", params={"n": n})["results"])

    def reconstruction(self, image_id: int) -> bytes:
        """PNG bytes of what the model makes of an indexed image."""
        return self._send("GET", f"/api/images/{int(image_id)}/reconstruction").content

    def reconstruct(self, image: Query) -> bytes:
        """PNG bytes of what the model makes of an image of yours."""
        files = {"image": ("query", _as_bytes(image), "application/octet-stream")}
        return self._send("POST", "/api/reconstruction", files=files).content

    def map(self, method: str = "pca") -> dict[str, Any]:
        """Every image's place on a 2-D map: {'ids', 'x', 'y', 'group', 'groups', 'method', 'generation'}."""
        return self._request("GET", "/api/map", params={"method": method})

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def add_images(self, *images: Query) -> list[dict[str, Any]]:
        """Add images to the collection (all or none); returns [{'id', 'path', 'new', 'thumbnail'}] in order."""
        files = [("image", (f"image{i}", _as_bytes(image), "application/octet-stream"))
                 for i, image in enumerate(images)]
        return list(self._request("POST", "/api/images", files=files, headers=self._auth())["added"])

    def delete_image(self, image_id: int) -> dict[str, Any]:
        """Remove an image from the collection: {'deleted': id, 'path': ..., 'images': N}."""
        return self._request("DELETE", f"/api/images/{int(image_id)}", headers=self._auth())
