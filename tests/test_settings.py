"""Settings as data: every one documented in the README, parsed from the environment and checked, offered as a flag;
a server that cannot start says why in one line."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys

import pytest
import requests
from PIL import Image

from encoder import store
from search_api.settings import SETTINGS, from_environment
from tests.support import REPO, start_server, stop_server

BY_ENV = {s.env: s for s in SETTINGS}

# A valid raw value and what it parses to, for every setting.
GOOD = {
    "LOOKALIKE_INDEX": ("/srv/collection", "/srv/collection"),
    "LOOKALIKE_HOST": ("0.0.0.0", "0.0.0.0"),
    "LOOKALIKE_PORT": ("9001", 9001),
    "LOOKALIKE_THREADS": ("2", 2),
    "LOOKALIKE_COMPUTE_THREADS": ("0", 0),
    "LOOKALIKE_SEARCH_THREADS": ("4", 4),
    "LOOKALIKE_MAX_UPLOAD_MB": ("2.5", 2.5),
    "LOOKALIKE_MAX_PIXELS": ("1000000", 1_000_000),
    "LOOKALIKE_DEFAULT_K": ("25", 25),
    "LOOKALIKE_THUMBNAIL_SIZE": ("128", 128),
    "LOOKALIKE_LOG_LEVEL": ("debug", "DEBUG"),
    "LOOKALIKE_API_TOKEN": (" s3cret-token-0123456789 ", "s3cret-token-0123456789"),
    "LOOKALIKE_FOLLOW_SECONDS": ("0.5", 0.5),
    "LOOKALIKE_RUNTIME": (" TensorFlow ", "tensorflow"),
}
# Malformed or out-of-range raw values: each must be refused, naming the variable.
BAD = {
    "LOOKALIKE_PORT": ["eighty", "0", "70000", "-1", "80.5", "8 0", "1_000"],
    "LOOKALIKE_THREADS": ["0", "-2", "many", "1.5"],
    "LOOKALIKE_COMPUTE_THREADS": ["-1", "two", "1001"],
    "LOOKALIKE_SEARCH_THREADS": ["-1", "1.0"],
    "LOOKALIKE_MAX_UPLOAD_MB": ["0", "-1", "lots", "nan", "inf"],
    "LOOKALIKE_MAX_PIXELS": ["0", "-5", "1e6", "many"],
    "LOOKALIKE_DEFAULT_K": ["0", "1001", "ten"],
    "LOOKALIKE_THUMBNAIL_SIZE": ["0", "-16", "big"],
    "LOOKALIKE_LOG_LEVEL": ["LOUD", "verbose"],
    "LOOKALIKE_API_TOKEN": ["short", "has a space in it here", "tab\tseparated-token-value"],
    "LOOKALIKE_FOLLOW_SECONDS": ["-1", "often", "nan"],
    "LOOKALIKE_RUNTIME": ["openvino", "onnx runtime", "tf"],
}


def readme() -> str:
    return (REPO / "README.md").read_text()


def readme_settings_rows() -> dict[str, str]:
    """The README's settings table, keyed by environment variable."""
    text = readme()
    assert "## Settings" in text, "the README has no Settings section"
    table = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[2].startswith("`LOOKALIKE_"):
            rows[cells[2].strip("`")] = line
    return rows


def test_the_examples_cover_every_setting():
    assert set(GOOD) == set(BY_ENV)
    assert set(BAD) <= set(BY_ENV)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_in_the_readme(setting):
    text = readme()
    assert setting.env in text, f"{setting.env} is not in the README"
    if setting.flag:
        assert setting.flag in text, f"{setting.flag} is not in the README"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_has_a_row_with_its_flag_and_default(setting):
    row = readme_settings_rows().get(setting.env)
    assert row is not None, f"{setting.env} is missing from the README's settings table"
    if setting.flag:
        assert f"`{setting.flag}`" in row
    if setting.default is not None:
        shown = f"{setting.default:g}" if isinstance(setting.default, float) else str(setting.default)
        assert f"`{shown}`" in row


def test_defaults_without_environment():
    assert from_environment({}) == {s.key: s.default for s in SETTINGS}
    assert from_environment({s.env: "" for s in SETTINGS}) == from_environment({})  # empty means unset
    assert from_environment({"UNRELATED": "1", "LOOKALIKE_NOPE": "x"}) == from_environment({})


@pytest.mark.parametrize("env", list(GOOD))
def test_environment_overrides(env):
    raw, expected = GOOD[env]
    config = from_environment({env: raw})
    assert config[BY_ENV[env].key] == expected and type(config[BY_ENV[env].key]) is type(expected)
    others = {s.key: s.default for s in SETTINGS if s.env != env}
    assert {k: v for k, v in config.items() if k != BY_ENV[env].key} == others


def test_all_overrides_at_once_and_from_the_process_environment(monkeypatch):
    for env, (raw, _) in GOOD.items():
        monkeypatch.setenv(env, raw)
    config = from_environment()
    assert config == {BY_ENV[env].key: expected for env, (_, expected) in GOOD.items()}


@pytest.mark.parametrize("env,raw", [(env, raw) for env, raws in BAD.items() for raw in raws])
def test_malformed_values_name_the_variable(env, raw):
    with pytest.raises(ValueError) as err:
        from_environment({env: raw})
    message = str(err.value)
    assert message.startswith(f"{env}=") and "expected" in message
    if env == "LOOKALIKE_API_TOKEN":  # a secret is never echoed, even a malformed one
        assert "<hidden>" in message and raw not in message
    else:
        assert repr(raw) in message


def run_server_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search_api", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)


def clean_env(**extra: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}, **extra}


def test_help_lists_every_flag():
    proc = run_server_cli("--help", env=clean_env())
    assert proc.returncode == 0
    out = " ".join(proc.stdout.split())  # argparse wraps lines
    for setting in SETTINGS:
        if setting.flag:
            assert setting.flag in out and setting.env in out
            if setting.default is not None:
                shown = f"{setting.default:g}" if isinstance(setting.default, float) else str(setting.default)
                assert f"{setting.env}, default {shown})" in out


@pytest.mark.parametrize("flag,raw", [("--port", "70000"), ("--port", "http"), ("--threads", "0"),
                                      ("--max-upload-mb", "-3"), ("--max-upload-mb", "inf")])
def test_bad_flag_values_are_usage_errors(tmp_path, flag, raw):
    proc = run_server_cli("--index", str(tmp_path), flag, raw, env=clean_env())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "error:" in last and flag in last and raw in last and "expected" in last


def one_line_error(proc: subprocess.CompletedProcess | subprocess.Popen, stderr: str) -> str:
    assert proc.returncode not in (0, None), stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), stderr
    return last


@pytest.mark.slow
def test_bad_starts_are_one_line_not_a_traceback(tmp_path, tiny_collection):
    """Every way a start can fail ends with exit status 2 and one `error: ...` line. The cases run side by side:
    several load TensorFlow before they fail."""
    corrupt = tmp_path / "corrupt-catalogue"
    store.copy_model(tiny_collection.index_dir, corrupt)
    (corrupt / "catalog.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    index = str(tiny_collection.index_dir)
    cases = [
        ((), clean_env(), "no collection given"),
        (("--index", str(tmp_path / "missing")), clean_env(), "no catalogue"),
        (("--index", str(a_file)), clean_env(), "no catalogue"),
        (("--index", str(tmp_path)), clean_env(LOOKALIKE_PORT="x"), "LOOKALIKE_PORT"),
        (("--index", str(tmp_path)), clean_env(LOOKALIKE_LOG_LEVEL="chatty"), "LOOKALIKE_LOG_LEVEL"),
        (("--index", str(tmp_path)), clean_env(LOOKALIKE_MAX_UPLOAD_MB="inf"), "LOOKALIKE_MAX_UPLOAD_MB"),
        (("--index", str(corrupt)), clean_env(), "cannot read the catalogue"),
        (("--index", index, "--port", str(taken.getsockname()[1])), clean_env(), "cannot listen"),
        (("--index", index, "--host", "no-such-host.invalid"), clean_env(), "cannot listen"),
    ]
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "search_api", *args], cwd=REPO, env=env, text=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for args, env, _ in cases]
        results = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        taken.close()
    for proc, stderr, (args, _, expected) in zip(procs, results, cases):
        assert proc.returncode == 2, (args, stderr)
        assert expected in one_line_error(proc, stderr), (args, stderr)


@pytest.mark.slow
def test_settings_reach_the_running_server(tiny_collection):
    """Environment variables configure the real server, and a flag beats its variable."""
    server = start_server(tiny_collection.index_dir, tiny_collection.images_dir, tiny_collection.images,
                          extra_env={"LOOKALIKE_DEFAULT_K": "3", "LOOKALIKE_MAX_UPLOAD_MB": "0.5",
                                     "LOOKALIKE_PORT": "1", "LOOKALIKE_THUMBNAIL_SIZE": "20",
                                     "LOOKALIKE_MAX_PIXELS": "1000000"})
    try:
        query = tiny_collection.images[3].read_bytes()
        body = requests.post(server.url + "/api/search", data=query, timeout=60).json()
        assert body["k"] == 3 and len(body["results"]) == 3  # LOOKALIKE_DEFAULT_K
        too_big = requests.post(server.url + "/api/search", data=b"\x00" * 600_000, timeout=60)
        assert too_big.status_code == 413 and "0.5 MB" in too_big.json()["error"]["message"]
        thumb = requests.get(server.url + body["results"][0]["thumbnail"], timeout=60)
        with Image.open(io.BytesIO(thumb.content)) as im:
            assert max(im.size) == 20  # LOOKALIKE_THUMBNAIL_SIZE
        def png(width: int, height: int) -> bytes:
            buf = io.BytesIO()
            Image.new("RGB", (width, height), (20, 90, 160)).save(buf, "PNG")
            return buf.getvalue()

        over = requests.post(server.url + "/api/search", files={"image": ("big.png", png(1001, 1000))}, timeout=60)
        assert over.status_code == 400 and "decompression-bomb" in over.json()["error"]["message"]  # MAX_PIXELS
        under = requests.post(server.url + "/api/search", files={"image": ("ok.png", png(1000, 1000))}, timeout=60)
        assert under.status_code == 200
        # --port (given by start_server) won over LOOKALIKE_PORT=1: the server answered on the flag's port.
        assert server.url.rsplit(":", 1)[1] != "1"
    finally:
        stop_server(server)
