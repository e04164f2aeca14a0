"""Test helpers: tiny real images, the real CLI as a user runs it, a real server on 127.0.0.1."""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests

from benchmarks.harness import REPO, LiveServer, free_port, make_image, start_server, stop_server

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "REPO", "TINY", "Collection", "LiveServer", "free_port", "make_image",
           "Searcher", "run_cli", "start_server", "stop_server", "wait_for", "write_images"]

CHROMIUM = "/usr/bin/chromium"  # Debian's; CI installs it, so its absence fails the browser tests
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TINY = ["--epochs", "3", "--image-size", "16", "--code-size", "8"]  # a model that trains in seconds
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_images(folder: Path, count: int, start: int = 0, ext: str = ".jpg", sub: str = "") -> list[Path]:
    """Write `count` distinct images into folder/sub, named by seed."""
    target = folder / sub if sub else folder
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(start, start + count):
        path = target / f"img_{seed:04d}{ext}"
        make_image(seed).save(path)
        paths.append(path)
    return paths


def run_cli(*args: str, check: bool = True, timeout: float = 300,
            subprocess_run: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m <args>` as a user would: through its `main(argv)` in this process (TensorFlow loads once for
    the whole suite), or in a fresh interpreter with `subprocess_run` (what exit codes and start-up need)."""
    if subprocess_run:
        proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
    else:
        proc = _run_in_process(args)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def _run_in_process(args: tuple[str, ...]) -> subprocess.CompletedProcess:
    module, argv = args[0], list(args[1:])
    target = importlib.import_module(module)  # a package runs its __main__, a module (search_api.console) itself
    main = getattr(target, "main", None) or importlib.import_module(f"{module}.__main__").main
    out, err = io.StringIO(), io.StringIO()
    # main()'s logging.basicConfig does nothing under pytest (the root logger already has pytest's handlers), so
    # log lines reach the captured stderr through a handler of our own, at the level the flags ask for.
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = logging.DEBUG if "-v" in argv else logging.WARNING if "-q" in argv or "--quiet" in argv else logging.INFO
    handler.setLevel(level)
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, saved_level or logging.WARNING))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse's usage errors, and the settings' one-line errors
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
    return subprocess.CompletedProcess([module, *argv], code, out.getvalue(), err.getvalue())


@dataclass
class Collection:
    images_dir: Path
    index_dir: Path
    images: list[Path]


class Searcher:
    """Threads searching the server without pause (by upload and by id) and tallying every answer."""

    def __init__(self, url: str, payloads: list[bytes], ids: list[int], threads: int = 4):
        self.url, self.payloads, self.ids = url, payloads, ids
        self.tally: Counter = Counter()
        self.problems: list[str] = []
        self.generations: set[int] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Searcher:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, number: int) -> None:
        session = requests.Session()
        i = number
        while not self._stop.is_set():
            i += 1
            try:
                if i % 2:
                    response = session.post(f"{self.url}/api/search?k=5",
                                            files={"image": ("q.png", self.payloads[i % len(self.payloads)])},
                                            timeout=30)
                else:
                    response = session.get(f"{self.url}/api/search?id={self.ids[i % len(self.ids)]}&k=5", timeout=30)
                body = response.json()
                # Whole answers only: k results, each with every field, from one generation.
                if response.status_code != 200 or len(body["results"]) != 5 or not all(
                        {"id", "path", "distance", "score", "percentile"} <= set(r) for r in body["results"]):
                    self.problems.append(f"{response.status_code}: {response.text[:300]}")
                    continue
                self.generations.add(body["generation"])
                self.tally["ok"] += 1
            except (requests.RequestException, ValueError, KeyError) as exc:
                self.problems.append(repr(exc))


def wait_for(condition, seconds: float = 120, every: float = 0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true after {seconds} s")
