"""The `lookalike` command: `serve` is `python -m search_api`, every other sub-command is `python -m indexer`."""
from __future__ import annotations

import sys

from search_api import __version__

SERVE = "serve"
# The top-level help only. Options are never repeated here: each sub-command's arguments go untouched to the
# indexer's or the server's own parser, so `lookalike X --help` and `python -m indexer X --help` are one text.
# tests/test_console.py checks this list against `python -m indexer --help`.
COMMANDS = {
    "build": "train an encoder if needed, then index new and changed images",
    "train": "(re)train the encoder only; the next build re-encodes everything",
    "info": "JSON summary of a collection",
    "search": "nearest neighbours of an image, without a server",
    "evaluate": "precision@k and mAP by sub-folder label",
    "duplicates": "groups of near-identical images, largest first",
    "outliers": "the images the model understands least",
    "map": "a 2-D map of every image's code, as a PNG",
    SERVE: "serve the search page and the JSON API (python -m search_api)",
}


def version() -> str:
    """The version of the code that is running."""
    # Not importlib.metadata: that describes whichever `lookalike` distribution is installed, which need not be this
    # code (a checkout run with `python -m` beside an older install, an editable install after a version bump).
    # The constant is the one source: both pyproject.toml files read their version from it.
    return __version__


def usage() -> str:
    """The help text of `lookalike` itself."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: lookalike [-h] [-V] {{{','.join(COMMANDS)}}} ...", "",
             "Search your own image collections by example, offline.", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, summary in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help     show this help and exit", "  -V, --version  print the version and exit",
              "", "`lookalike COMMAND --help` lists a command's options: the same as `python -m indexer COMMAND`",
              "(or `python -m search_api` for serve)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lookalike` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"lookalike {version()}")
        return 0
    # Imported only once chosen, so `--help` stays instant; neither module loads TensorFlow at import.
    if argv[0] == SERVE:
        from search_api.__main__ import main as serve

        return serve(argv[1:], prog="lookalike serve")
    from indexer.__main__ import main as index

    return index(argv, prog="lookalike")  # an unknown command gets the indexer's usage error, which lists its choices


if __name__ == "__main__":
    sys.exit(main())
