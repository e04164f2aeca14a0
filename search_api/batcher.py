"""Micro-batching: concurrent requests' images encoded together in one compiled call instead of one call each."""
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
    (dispatch, thread hand-offs) that a batch of eight pays once instead of eight times.
    """

    def __init__(self, fn: BatchFn, max_batch: int = 32):
        self.fn = fn
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[np.ndarray, Future] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="lookalike-encoder", daemon=True)
        self._closed = False
        self._closing = threading.Lock()  # nothing is queued behind the stop: it would wait for ever
        self._worker.start()
        self.batches = 0  # calls of fn, for tests and /metrics
        self.images = 0

    def encode(self, pixels: np.ndarray) -> tuple:
        """One image (S, S, C) uint8 -> its row of each array `fn` returns (code (d,), error…); blocks until done."""
        future: Future = Future()
        with self._closing:
            queued = not self._closed
            if queued:
                self._queue.put((pixels, future))
        if not queued:
            # Closed (a server switched to a new model): a late caller of the old one is encoded in its own thread.
            return tuple(output[0] for output in self.fn(pixels[None]))
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

    def _encode(self, batch: list[tuple[np.ndarray, Future]]) -> None:
        try:
            outputs = self.fn(np.stack([pixels for pixels, _ in batch]))  # each (B, ...)
        except BaseException as exc:  # the callers get the error; the worker lives on
            log.exception("encoding a batch of %d failed", len(batch))
            for _, future in batch:
                future.set_exception(exc)
            return
        self.batches += 1
        self.images += len(batch)
        for i, (_, future) in enumerate(batch):
            future.set_result(tuple(output[i] for output in outputs))
