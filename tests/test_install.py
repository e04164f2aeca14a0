"""Installs as the README documents them, into fresh virtual environments: the client alone, and the full wheel."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from search_api import __version__
from tests.support import REPO, free_port

pytestmark = pytest.mark.slow

# What the client must never pull in; Pillow and numpy too, since the plain client install is requests only.
HEAVY = {"tensorflow", "tensorflow-cpu", "keras", "faiss-cpu", "faiss", "flask", "werkzeug", "waitress", "numpy",
         "pillow"}


def _env() -> dict[str, str]:
    """This environment without PYTHONPATH, so nothing of the checkout can shadow what was installed."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    return proc


def _venv(path: Path, system_site_packages: bool = False) -> Path:
    """A new virtual environment; returns its bin folder."""
    _run(sys.executable, "-m", "venv", *(["--system-site-packages"] if system_site_packages else []), path,
         cwd=path.parent)
    return path / "bin"


def test_client_alone_installs_without_the_model_stack_and_searches(live_server, tmp_path):
    bin_dir = _venv(tmp_path / "venv")
    # The README's command, from outside the checkout as a user's shell would be; PyPI gives hatchling and requests.
    _run(bin_dir / "pip", "install", "--quiet", REPO / "packaging" / "client", cwd=tmp_path)
    listed = json.loads(_run(bin_dir / "pip", "list", "--format=json", cwd=tmp_path).stdout)
    installed = {p["name"].lower(): p["version"] for p in listed}
    assert installed["lookalike-client"] == __version__ and "requests" in installed
    assert not HEAVY & set(installed), sorted(HEAVY & set(installed))
    assert "lookalike" not in installed

    query = live_server.images[7]
    expected = query.relative_to(live_server.images_dir).as_posix()
    script = tmp_path / "search.py"
    script.write_text(f"""
import json, sys
from search_api.client import SearchClient, SearchError
with SearchClient({live_server.url!r}, timeout=60) as client:
    hits = client.search({str(query)!r}, k=3)
    again = client.search_by_id(hits[0].id, k=3)
    try:
        client.search(b"not an image")
        refused = None
    except SearchError as err:
        refused = [err.status, err.code]
    print(json.dumps({{"paths": [h.path for h in hits], "distances": [h.distance for h in hits],
                      "again": [h.id for h in again], "ids": [h.id for h in hits], "images": hits.images,
                      "refused": refused, "client": sys.modules["search_api.client"].__file__,
                      "heavy": [m for m in {sorted(HEAVY)!r} if m in sys.modules]}}))
""")
    # -I: isolated from the checkout (no script folder, PYTHON* variables or user site on sys.path).
    out = json.loads(_run(bin_dir / "python", "-I", script, cwd=tmp_path, timeout=120).stdout)
    assert Path(out["client"]).is_relative_to(tmp_path / "venv")
    assert out["paths"][0] == expected and out["distances"] == sorted(out["distances"])
    assert out["distances"][0] < out["distances"][1]
    assert len(out["again"]) == 3 and out["ids"][0] not in out["again"]  # by id: the image itself left out
    assert out["images"] == 40
    assert out["refused"] == [400, "invalid_image"]
    assert out["heavy"] == []


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"lookalike serve exited {process.returncode}: {log.read_text()}"
        try:
            answer = requests.get(url + "/api/health", timeout=1)
            if answer.status_code == 200:
                return answer.json()
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"lookalike serve not ready in 120 s: {log.read_text()}")


def test_lookalike_command_from_the_built_wheel(tiny_collection, tmp_path):
    # The full requirements (TensorFlow, FAISS, ...) are too big to download per test run, so the wheel goes into a
    # venv that sees this interpreter's packages, with --no-deps. What is tested is ours: the wheel setuptools builds
    # from pyproject.toml, its `lookalike` script, and that the installed copy (not the checkout) runs.
    source = tmp_path / "source"  # a copy: setuptools writes build/ and *.egg-info beside the sources it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for package in ("encoder", "indexer", "search_api"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    bin_dir = _venv(tmp_path / "venv", system_site_packages=True)
    _run(bin_dir / "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", source, cwd=tmp_path)
    shutil.rmtree(source)  # so nothing can come from the copy either
    lookalike = bin_dir / "lookalike"

    where = _run(bin_dir / "python", "-I", "-c", "import importlib.metadata as m, search_api.console as c; "
                 "print(m.version('lookalike'), c.__file__)", cwd=tmp_path).stdout.split()
    assert where[0] == __version__ and Path(where[1]).is_relative_to(tmp_path / "venv")
    assert _run(lookalike, "--version", cwd=tmp_path).stdout == f"lookalike {__version__}\n"
    assert "serve" in _run(lookalike, "--help", cwd=tmp_path).stdout

    index = tiny_collection.index_dir
    info = json.loads(_run(lookalike, "info", "--index", index, cwd=tmp_path).stdout)
    assert info["images"] == 40 and info["index"] == str(index.resolve())
    query = tiny_collection.images[3]
    found = json.loads(_run(lookalike, "search", "--index", index, query, "-k", "3", cwd=tmp_path).stdout)
    assert found["results"][0]["path"] == query.relative_to(tiny_collection.images_dir).as_posix()

    # serve: the installed package's templates and static files must be there for the page to render.
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("w") as stderr:
        server = subprocess.Popen([lookalike, "serve", "--index", index, "--port", str(port)], cwd=tmp_path,
                                  env={**_env(), "LOOKALIKE_LOG_LEVEL": "WARNING"}, stdout=subprocess.DEVNULL,
                                  stderr=stderr)
    try:
        url = f"http://127.0.0.1:{port}"
        assert _wait_healthy(url, server, log)["images"] == 40
        page = requests.get(url + "/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert requests.get(url + "/static/app.js", timeout=10).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
