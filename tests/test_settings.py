"""Settings as data: every one documented in the README, parsed from the environment, offered as a flag."""
from __future__ import annotations

import subprocess
import sys

import pytest

from search_api.settings import SETTINGS, from_environment
from tests.conftest import REPO


def readme_settings_rows() -> dict[str, str]:
    """The README's settings table, keyed by environment variable."""
    text = (REPO / "README.md").read_text()
    table = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[2].startswith("`LOOKALIKE_"):
            rows[cells[2].strip("`")] = line
    return rows


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_is_in_the_readme_table(setting):
    row = readme_settings_rows().get(setting.env)
    assert row is not None, f"{setting.env} is missing from the README's settings table"
    if setting.flag:
        assert f"`{setting.flag}`" in row
    if setting.default is not None:
        assert f"`{setting.default:g}`" in row if isinstance(setting.default, float) else f"`{setting.default}`" in row


def test_environment_overrides_and_errors():
    config = from_environment({"LOOKALIKE_PORT": "9001", "LOOKALIKE_MAX_UPLOAD_MB": "2.5", "LOOKALIKE_HOST": ""})
    assert config["PORT"] == 9001 and config["MAX_UPLOAD_MB"] == 2.5 and config["HOST"] == "127.0.0.1"
    assert from_environment({})["DEFAULT_K"] == 10
    with pytest.raises(ValueError, match="LOOKALIKE_PORT"):
        from_environment({"LOOKALIKE_PORT": "eighty"})


def run_server_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search_api", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)


def test_help_lists_every_flag():
    out = run_server_cli("--help").stdout
    for setting in SETTINGS:
        if setting.flag:
            assert setting.flag in out and setting.env in out


def test_bad_start_is_one_line_not_a_traceback(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    cases = [(run_server_cli(env=env), "no collection given"),
             (run_server_cli("--index", str(tmp_path / "missing"), env=env), "error: "),
             (run_server_cli("--index", str(tmp_path), env={**env, "LOOKALIKE_PORT": "x"}), "LOOKALIKE_PORT")]
    for proc, message in cases:
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last
