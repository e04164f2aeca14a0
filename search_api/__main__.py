"""Serve the page and the API with waitress: python -m search_api --index DIR."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sqlite3
import sys

from indexer.settings import argument_type
from search_api import settings


def _shown(value) -> str:
    """A default as the README's table shows it: 20.0 as 20."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _parser(defaults: dict, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve a lookalike collection.")
    for setting in settings.SETTINGS:
        if setting.flag:
            default = "" if setting.default is None else f", default {_shown(setting.default)}"
            parse = argument_type(setting.parse, setting.key.lower(), echo=True)
            parser.add_argument(setting.flag, dest=setting.key, type=parse,
                                default=defaults[setting.key], help=f"{setting.help} ({setting.env}{default})")
    return parser


def _listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address waitress would listen on for host:port; raises OSError or ValueError."""
    from waitress.adjustments import Adjustments

    bound: list[socket.socket] = []
    try:
        for family, kind, proto, address in Adjustments(host=host, port=port).listen:  # waitress's own resolution
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what waitress sets on the sockets it makes
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


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

    # The address first: a port in use is an error in a second, not after the model has loaded.
    try:
        sockets = _listen_sockets(config["HOST"], config["PORT"])
    except (OSError, ValueError) as exc:  # port taken, no such host, permission denied
        print(f"error: cannot listen on {config['HOST']}:{config['PORT']}: {exc}", file=sys.stderr)
        return 2

    import waitress

    from encoder.store import ModelError
    from search_api.app import create_app

    failure = None
    try:
        app = create_app(config)
    except (ModelError, OSError, ValueError) as exc:  # no collection, unreadable files, a modified model
        failure = str(exc)
    except sqlite3.Error as exc:
        failure = f"cannot read the catalogue in {config['INDEX_DIR']}: {exc}; re-run the indexer"
    if failure is not None:
        for sock in sockets:
            sock.close()
        print(f"error: {failure}", file=sys.stderr)
        return 2
    # waitress buffers a whole body before the app sees it, so it gets a cap too: a little above Flask's limit,
    # leaving Flask to answer ordinary oversize uploads with the JSON envelope.
    server = waitress.create_server(app, sockets=sockets, threads=config["THREADS"],
                                    max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1_000_000,
                                    ident="lookalike")
    app.extensions["lookalike.metrics"].watch_queue(lambda: len(server.task_dispatcher.queue))
    port = sockets[0].getsockname()[1]  # the port chosen, when --port 0 asked for any free one
    logging.getLogger("search_api").info("serving %s on http://%s:%d/", config["INDEX_DIR"], config["HOST"], port)
    server.run()  # until interrupted; waitress shuts its threads down on Ctrl-C
    return 0


if __name__ == "__main__":
    sys.exit(main())
