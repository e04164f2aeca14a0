"""One JSON error envelope for every error, whatever raised it: {"error": {"status", "code", "message"}}."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from encoder.preprocess import ImageError
from indexer.projection import ProjectionUnavailable
from indexer.writes import BadUpload, WriteBusy
from search_api.engine import NotFound

log = logging.getLogger(__name__)

# Machine-readable codes for the errors Flask and Werkzeug raise themselves.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
}

# The engine's domain errors, answered here rather than caught in each route: (status, code, message prefix).
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str, str]] = {
    NotFound: (404, "not_found", ""),
    ImageError: (400, "invalid_image", "cannot use this image: "),  # the query image; stored files never get here
    BadUpload: (400, "invalid_image", "nothing was added: "),
    WriteBusy: (409, "busy", ""),
    ProjectionUnavailable: (400, "unavailable", ""),  # a map method whose optional extra this server lacks
}


class ApiError(Exception):
    """An error to answer with: HTTP status, machine code, human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def envelope(status: int, code: str, message: str):
    """The JSON response for an error."""
    response = jsonify({"error": {"status": status, "code": code, "message": message}})
    response.status_code = status
    return response


def _domain_handler(status: int, code: str, prefix: str):
    def handle(exc: Exception):
        return envelope(status, code, f"{prefix}{exc}")

    return handle


def register(app: Flask) -> None:
    """Route every error through the envelope."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        response = envelope(exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        return response

    for kind, (status, code, prefix) in DOMAIN_ERRORS.items():
        app.register_error_handler(kind, _domain_handler(status, code, prefix))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            limit, length = app.config["MAX_CONTENT_LENGTH"], request.content_length
            if length is not None and length <= limit:  # the body fits: Werkzeug's caps on form fields or parts
                message = ("the form is over the limits for text fields (MAX_FORM_MEMORY_SIZE) or parts; "
                           "send the image as a file in field 'image'")
            else:
                message = f"the request body is larger than the {limit / 1e6:g} MB limit"
        response = envelope(status, HTTP_CODES.get(status, "http_error"), message)
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return envelope(500, "internal_error", "internal error; the server log has the details")
