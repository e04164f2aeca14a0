"""Serve the page and the API with waitress: python -m search_api --index DIR."""
from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys

from search_api import settings


def _flag_type(setting: settings.Setting):
    """The setting's parser, with its complaint passed on to argparse's one-line usage error."""

    def parse(raw: str):
        try:
            return setting.parse(raw)
        except ValueError as why:
            raise argparse.ArgumentTypeError(f"{raw[:40]!r}: {why}") from None

    return parse


def _shown(value) -> str:
    """A default as the README's table shows it: 20.0 as 20."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _parser(defaults: dict, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve a lookalike collection.")
    for setting in settings.SETTINGS:
        if setting.flag:
            default = "" if setting.default is None else f", default {_shown(setting.default)}"
            parser.add_argument(setting.flag, dest=setting.key, type=_flag_type(setting),
                                default=defaults[setting.key], help=f"{setting.help} ({setting.env}{default})")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m search_api") -> int:
    """Parse settings, load the collection once, serve until interrupted; `prog` names the command in usage."""
    try:
        defaults = settings.from_environment()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = {**defaults, **vars(_parser(defaults, prog).parse_args(argv))}
    logging.basicConfig(level=config["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # waitress warns once per request that waits for a thread: ~80 lines a second under a normal load. The
        # queue depth is a gauge at /metrics instead (lookalike_http_queued_requests).
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not config["INDEX_DIR"]:
        print("error: no collection given: pass --index DIR or set LOOKALIKE_INDEX", file=sys.stderr)
        return 2

    import waitress

    from encoder.store import ModelError
    from search_api.app import create_app

    try:
        app = create_app(config)
    except (ModelError, OSError, ValueError) as exc:  # no collection, unreadable files, a modified model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"error: cannot read the catalogue in {config['INDEX_DIR']}: {exc}; re-run the indexer", file=sys.stderr)
        return 2
    # waitress buffers a whole body before the app sees it, so it gets a cap too: a little above Flask's limit,
    # leaving Flask to answer ordinary oversize uploads with the JSON envelope.
    try:
        server = waitress.create_server(app, host=config["HOST"], port=config["PORT"], threads=config["THREADS"],
                                        max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1_000_000,
                                        ident="lookalike")
    except (OSError, ValueError) as exc:  # port taken, no such host, permission denied
        print(f"error: cannot listen on {config['HOST']}:{config['PORT']}: {exc}", file=sys.stderr)
        return 2
    app.extensions["lookalike.metrics"].watch_queue(lambda: len(server.task_dispatcher.queue))
    logging.getLogger("search_api").info("serving %s on http://%s:%d/", config["INDEX_DIR"], config["HOST"],
                                         config["PORT"])
    server.run()  # until interrupted; waitress shuts its threads down on Ctrl-C
    return 0


if __name__ == "__main__":
    sys.exit(main())
