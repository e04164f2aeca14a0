"""Micro-batching of concurrent queries, with the real encoder of the tiny collection."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from encoder.embed import Encoder
from encoder.preprocess import load_image
from search_api.batcher import MicroBatcher


@pytest.fixture(scope="module")
def encoder(tiny_collection) -> Encoder:
    return Encoder.load(tiny_collection.index_dir)


def pixels_of(encoder: Encoder, paths) -> list[np.ndarray]:
    return [load_image(p, encoder.image_size, encoder.channels).pixels for p in paths]


def queue_behind_the_first(batcher: MicroBatcher, threads: list[threading.Thread]) -> None:
    """Start threads[0], wait until the worker has taken its image, then start the rest and wait until they queue."""
    threads[0].start()
    deadline = time.monotonic() + 30
    while batcher._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.005)
    for t in threads[1:]:
        t.start()
    while batcher._queue.qsize() < len(threads) - 1 and time.monotonic() < deadline:
        time.sleep(0.005)


def test_concurrent_images_are_encoded_together_with_the_same_results(encoder, tiny_collection):
    images = pixels_of(encoder, tiny_collection.images[:8])
    expected_codes, expected_errors = encoder.encode_with_error(np.stack(images))
    gate = threading.Event()

    def gated(batch):  # holds the worker on its first batch until all the other queries are queued
        gate.wait(30)
        return encoder.encode_with_error(batch)

    batcher = MicroBatcher(gated, max_batch=32)
    results: dict[int, tuple] = {}

    def query(i: int) -> None:
        results[i] = batcher.encode(images[i])

    threads = [threading.Thread(target=query, args=(i,)) for i in range(8)]
    queue_behind_the_first(batcher, threads)
    gate.set()
    for t in threads:
        t.join(30)
    assert batcher.batches == 2 and batcher.images == 8  # query 0 alone, then the seven that queued behind it
    for i in range(8):
        np.testing.assert_allclose(results[i][0], expected_codes[i], rtol=1e-4, atol=1e-5)
        assert results[i][1] == pytest.approx(float(expected_errors[i]), rel=1e-4, abs=1e-7)
    batcher.close()
    assert not batcher._worker.is_alive()


def test_a_failing_batch_reaches_its_callers_and_the_worker_lives_on(encoder, tiny_collection):
    batcher = MicroBatcher(encoder.encode_with_error)
    with pytest.raises(ValueError, match="expected"):
        batcher.encode(np.zeros((5, 5, 3), np.uint8))  # the wrong shape for this encoder
    code, error = batcher.encode(pixels_of(encoder, tiny_collection.images[:1])[0])
    assert code.shape == (encoder.code_size,) and float(error) >= 0
    batcher.close()


def test_a_closed_batcher_encodes_late_callers_in_their_own_thread():
    calls: list[int] = []

    def fn(pixels: np.ndarray) -> tuple[np.ndarray]:
        calls.append(threading.get_ident())
        return (pixels.reshape(len(pixels), -1).sum(axis=1),)

    batcher = MicroBatcher(fn)
    assert batcher.encode(np.full((2, 2, 1), 3, np.uint8))[0] == 12
    batcher.close()  # a server switched to a new model; a request that took the old one arrives late
    assert batcher.encode(np.full((2, 2, 1), 1, np.uint8))[0] == 4
    assert calls[-1] == threading.get_ident() and calls[0] != threading.get_ident()


def test_named_functions_share_a_batch_and_each_runs_once_on_its_callers(encoder, tiny_collection):
    images = pixels_of(encoder, tiny_collection.images[:6])
    calls: list[tuple[str, int]] = []
    gate = threading.Event()

    def named(name, fn):
        def run(batch):
            gate.wait(30)  # the first batch waits until every caller has queued
            calls.append((name, len(batch)))
            return fn(batch)
        return run

    batcher = MicroBatcher({"query": named("query", encoder.encode_for_query),
                            "codes": named("codes", encoder.encode_with_latents)})
    results: dict[int, tuple] = {}
    wants = ["query", "codes", "query", "codes", "codes", "query"]
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.encode(images[i], wants[i])))
               for i in range(6)]
    queue_behind_the_first(batcher, threads)
    gate.set()
    for t in threads:
        t.join(30)
    assert calls == [("query", 1), ("query", 2), ("codes", 3)]  # query 0 alone, then one call per function
    codes, errors, _ = encoder.encode_for_query(np.stack(images))
    for i, want in enumerate(wants):
        assert len(results[i]) == (3 if want == "query" else 2)
        np.testing.assert_allclose(results[i][0], codes[i], atol=1e-5)
        if want == "query":
            assert results[i][1] == pytest.approx(errors[i], abs=1e-6)
    with pytest.raises(KeyError, match="no batch function"):
        batcher.encode(images[0], "reconstruct")
    batcher.close()
