"""The `lookalike` command run as `python -m search_api.console`: help, version, and dispatch to both CLIs."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from search_api import __version__
from search_api.console import COMMANDS, SERVE
from tests.support import REPO, run_cli

HEAVY = ("tensorflow", "keras", "faiss", "flask")


def test_help_lists_every_command_without_loading_the_model_stack():
    # The sub-commands' own modules are not imported for the top-level help, so it answers at once.
    script = ("import sys; from search_api.console import main; status = main(['--help']); "
              f"print(status, [m for m in {HEAVY!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    *text, last = proc.stdout.strip().splitlines()
    assert last == "0 []"
    help_text = "\n".join(text)
    assert help_text.startswith("usage: lookalike ")
    for name in ("build", "train", "info", "search", "evaluate", "serve"):
        assert re.search(rf"^  {name} +\S", help_text, re.M), name


def test_commands_are_the_indexers_plus_serve():
    # The help's list is written out; this keeps it in step with the indexer's parser when a command is added.
    usage = run_cli("indexer", "--help").stdout
    choices = re.search(r"\{([a-z,_-]+)\}", usage).group(1).split(",")
    assert list(COMMANDS) == [*choices, SERVE]


def test_version_and_bare_command():
    assert run_cli("search_api.console", "--version").stdout == f"lookalike {__version__}\n"
    assert run_cli("search_api.console", "-V").stdout == f"lookalike {__version__}\n"
    bare = run_cli("search_api.console", check=False)
    assert bare.returncode == 2 and bare.stdout == "" and bare.stderr.startswith("usage: lookalike ")


def test_sub_commands_reach_the_indexer_and_the_server_parsers():
    build = run_cli("search_api.console", "build", "--help").stdout
    assert "--epochs" in build and "--time-budget" in build and build.startswith("usage: lookalike build ")
    serve = run_cli("search_api.console", "serve", "--help").stdout
    assert serve.startswith("usage: lookalike serve ")
    assert "--index" in serve and "--threads" in serve and "--max-upload-mb" in serve
    unknown = run_cli("search_api.console", "nonsense", check=False)
    assert unknown.returncode == 2 and "invalid choice: 'nonsense'" in unknown.stderr


def test_info_through_the_console_matches_python_m_indexer(tiny_collection):
    index = str(tiny_collection.index_dir)
    via_console = json.loads(run_cli("search_api.console", "info", "--index", index).stdout)
    assert via_console == json.loads(run_cli("indexer", "info", "--index", index).stdout)
    assert via_console["images"] == 40


def test_serve_errors_come_from_the_server():
    # No collection: the server's own one-line error and status, before anything heavy is loaded.
    proc = run_cli("search_api.console", "serve", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no collection given: pass --index DIR or set LOOKALIKE_INDEX"
