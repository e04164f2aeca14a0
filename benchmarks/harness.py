"""What the benchmarks share with the tests: synthetic pictures and the real server on 127.0.0.1, started the way a
user starts it (`python -m search_api`) and polled until it answers. Benchmarks import only this; the tests reuse
it through tests/support.py."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import requests
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]


def make_image(seed: int, size: int = 48, mode: str = "RGB") -> Image.Image:
    """A distinct synthetic picture: a background colour, a few shapes and some texture, all drawn from `seed`."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, 2))
        x1, y1 = x0 + int(rng.integers(size // 6, size // 2)), y0 + int(rng.integers(size // 6, size // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    noise = rng.integers(-12, 13, (size, size, 3))
    img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
    return img.convert(mode) if mode != "RGB" else img


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    images_dir: Path
    index_dir: Path
    images: list[Path]
    process: subprocess.Popen
    log: IO[str] | None = None  # the server's stderr, in a file: a pipe nobody reads fills up and blocks the server

    def stderr(self) -> str:
        """What the server has logged so far."""
        if self.log is None:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


def start_server(index_dir: Path, images_dir: Path, images: list[Path], extra_env: dict | None = None,
                 args: tuple[str, ...] = ()) -> LiveServer:
    """Start `python -m search_api` on a free port and wait until /api/health answers."""
    port = free_port()
    env = {**os.environ, "LOOKALIKE_LOG_LEVEL": "WARNING", **(extra_env or {})}
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "search_api", "--index", str(index_dir), "--port", str(port), *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
    )
    server = LiveServer(url := f"http://127.0.0.1:{port}", images_dir, index_dir, images, process, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}: {server.stderr()}")
        try:
            if requests.get(url + "/api/health", timeout=1).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    process.kill()
    log.close()
    raise AssertionError("server did not become ready in 120 s")


def stop_server(server: LiveServer) -> None:
    """Terminate the server process and wait for it."""
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if server.log is not None:
        server.log.close()
