"""Micro-batching: concurrent requests' images encoded together, one call per batch instead of one per request."""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

log = logging.getLogger(__name__)

BatchFn = Callable[[np.ndarray], tuple[np.ndarray, ...]]  # (B, S, S, C) uint8 -> arrays of B rows (codes, errors…)


class MicroBatcher:
    """One worker thread runs `fn` on whatever images are waiting, up to `max_batch` at a time.

    No timer: an image arriving at an idle worker is encoded at once, so a lone query waits for nothing; under
    load, the images that arrive while a batch runs form the next batch. Each call of the graph has a fixed cost
    (dispatch, thread hand-offs) that a batch of eight pays once instead of eight times. `fn` may also be a dict of
    named functions (say, with and without the reconstruction error): a caller names the one it needs, and a batch
    runs each function once on the images that asked for it.
    """

    def __init__(self, fn: BatchFn | dict[str, BatchFn], max_batch: int = 32):
        self.functions = fn if isinstance(fn, dict) else {"": fn}
        self.default = next(iter(self.functions))
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[np.ndarray, Future, str] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="lookalike-encoder", daemon=True)
        self._closed = False
        self._closing = threading.Lock()  # nothing is queued behind the stop: it would wait for ever
        self._worker.start()
        self.batches = 0  # calls of fn, for tests and /metrics
        self.images = 0

    def encode(self, pixels: np.ndarray, function: str | None = None) -> tuple:
        """One image (S, S, C) uint8 -> its row of each array the function returns (code (d,), error…); blocks
        until done. `function` names one of a dict's functions (the first by default)."""
        name = self.default if function is None else function
        if name not in self.functions:
            raise KeyError(f"no batch function {name!r}")
        future: Future = Future()
        with self._closing:
            queued = not self._closed
            if queued:
                self._queue.put((pixels, future, name))
        if not queued:
            # Closed (a server switched to a new model): a late caller of the old one is encoded in its own thread.
            return tuple(output[0] for output in self.functions[name](pixels[None]))
        return future.result()

    def close(self) -> None:
        """Stop the worker after the images already queued; later calls encode in the caller's thread."""
        with self._closing:
            self._closed = True
            self._queue.put(None)
        self._worker.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # close() after this batch
                    self._queue.put(None)
                    break
                batch.append(item)
            self._encode(batch)

    def _encode(self, batch: list[tuple[np.ndarray, Future, str]]) -> None:
        for name, fn in self.functions.items():
            part = [(pixels, future) for pixels, future, wanted in batch if wanted == name]
            if not part:
                continue
            try:
                outputs = fn(np.stack([pixels for pixels, _ in part]))  # each (B, ...)
            except BaseException as exc:  # the callers get the error; the worker lives on
                log.exception("encoding a batch of %d failed", len(part))
                for _, future in part:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(part)
            for i, (_, future) in enumerate(part):
                future.set_result(tuple(output[i] for output in outputs))
