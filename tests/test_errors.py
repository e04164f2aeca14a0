"""The error envelope: the engine's domain errors are answered in one place, whichever route raised them."""
from __future__ import annotations

import pytest
from flask import Flask

from encoder.preprocess import ImageError
from indexer.writes import BadUpload, WriteBusy
from search_api import errors
from search_api.engine import NotFound


def raising(exc: Exception) -> Flask:
    """An app whose one route raises `exc`, with the envelope registered as create_app does."""
    app = Flask(__name__)
    errors.register(app)

    @app.get("/raise")
    def route():
        raise exc

    return app


@pytest.mark.parametrize(("exc", "status", "code", "message"), [
    (NotFound("no image with id 7"), 404, "not_found", "no image with id 7"),
    (ImageError("not a picture"), 400, "invalid_image", "cannot use this image: not a picture"),
    (BadUpload(1, "b.jpg", "truncated"), 400, "invalid_image", "nothing was added: image 2 ('b.jpg'): truncated"),
    (WriteBusy("a build is running"), 409, "busy", "a build is running"),
    (ValueError("a bug, not a bad image"), 500, "internal_error", "internal error; the server log has the details"),
])
def test_domain_errors_answer_in_the_envelope(exc, status, code, message):
    response = raising(exc).test_client().get("/raise")
    assert response.status_code == status
    assert response.get_json() == {"error": {"status": status, "code": code, "message": message}}

