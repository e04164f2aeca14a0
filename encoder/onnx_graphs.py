"""The inference graphs as ONNX, run by ONNX Runtime: the fast path on every CPU, the model still trained in Keras.

Measured on the default 32x32 encoder (issue 17): one image takes 0.13-0.2 ms in ONNX Runtime against 0.7-1.2 ms in
TensorFlow, and 5 ms in TensorFlow when oneDNN is held to AVX2 (a per-call cost, not arithmetic); a batch costs the
same per image in both. Training exports both graphs next to `encoder.keras` (their sha256s go in `encoder.json`);
a model saved without them (or whose export failed) is converted in memory when loaded. Either way, at export and at
every load, the graphs must give the Keras graphs' numbers on a probe batch, or TensorFlow serves instead.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

GRAPH_FILES = {"codes": "encoder-codes.onnx", "errors": "encoder-errors.onnx"}
OPSET = 17
TOLERANCE = 1e-4  # largest difference from the Keras graph's outputs on the probe batch (float32 round-off: ~1e-6)


class ConversionError(RuntimeError):
    """The converter failed on this model, or its graphs do not give the Keras graphs' numbers."""


def export(model) -> dict[str, bytes]:
    """The model's codes and errors graphs as serialised ONNX models, checked against TensorFlow on a probe batch."""
    from encoder import graphs

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # it narrates every rewrite at INFO
    try:
        import tf2onnx

        functions, spec = graphs.tensorflow_graphs(model), graphs.signatures(model)
        blobs = {name: tf2onnx.convert.from_function(functions[name], input_signature=spec[name], opset=OPSET)[0]
                 .SerializeToString() for name in GRAPH_FILES}
    except Exception as exc:  # the converter raises anything from KeyError to its own errors for an op it lacks
        raise ConversionError(f"ONNX conversion failed: {type(exc).__name__}: {exc}") from None
    checked(model, blobs, threads=1)
    return blobs


def checked(model, blobs: dict[str, bytes], threads: int) -> OnnxGraphs:
    """Sessions for `blobs`, once they give the model's numbers; ConversionError if ONNX Runtime refuses or differs."""
    try:
        graphs = OnnxGraphs(blobs, threads)
    except Exception as exc:  # a runtime that cannot read the graphs (an op or opset it lacks) raises its own errors
        raise ConversionError(f"ONNX Runtime cannot run the graphs: {type(exc).__name__}: {exc}") from None
    check(model, graphs)
    return graphs


def check(model, onnx: OnnxGraphs) -> None:
    """Raise ConversionError unless `onnx` gives the Keras model's codes, latents and errors on a probe batch."""
    from encoder import graphs

    probe = np.random.default_rng(0).integers(0, 256, (4, model.image_size, model.image_size, model.channels),
                                              dtype=np.uint8)
    expected = graphs.codes_graph(model, probe)
    expected |= graphs.errors_graph(model, probe, expected["latents"])
    worst = 0.0
    for rows in (slice(0, 4), slice(0, 1)):  # a batch, and one image alone (a lone query)
        try:
            codes, latents = onnx.codes(probe[rows])
            got = {"codes": codes, "latents": latents, "errors": onnx.errors(probe[rows], latents)}
        except Exception as exc:  # a kernel that fails at run time: as good as a conversion that failed
            raise ConversionError(f"ONNX Runtime failed on the graphs: {type(exc).__name__}: {exc}") from None
        worst = max([worst, *(float(np.max(np.abs(got[k] - np.asarray(expected[k])[rows]))) for k in got)])
    if not worst <= TOLERANCE:  # also catches NaN
        raise ConversionError(f"ONNX graphs differ from Keras by {worst:.2g} (tolerance {TOLERANCE})")


class OnnxGraphs:
    """ONNX Runtime sessions of the codes and errors graphs."""

    def __init__(self, blobs: dict[str, bytes], threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads sleep instead of spinning: a server's request threads and an indexer's decoding
        # processes need those cores between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions = {name: ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
                          for name, blob in blobs.items()}

    def codes(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, S, S, C) -> codes (B, d), latents (B, d)."""
        codes, latents = self._sessions["codes"].run(["codes", "latents"], {"pixels": pixels})
        return codes, latents

    def errors(self, pixels: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """uint8 (B, S, S, C) and latents (B, d) -> reconstruction errors (B,)."""
        return self._sessions["errors"].run(["errors"], {"pixels": pixels, "latents": latents})[0]


def saved_blobs(index_dir: str | os.PathLike, info: dict[str, Any]) -> dict[str, bytes] | None:
    """The exported graphs `encoder.json` records, after checking their sha256; None when it records none."""
    from encoder.store import ModelError

    recorded = info.get("onnx")
    if not recorded:
        return None
    if not isinstance(recorded, dict) or set(recorded) != set(GRAPH_FILES):
        raise ModelError(f"encoder.json in {index_dir} records graphs {sorted(recorded)}, not "
                         f"{sorted(GRAPH_FILES)}; retrain with --retrain")
    blobs = {}
    for name, sha in recorded.items():
        path = Path(index_dir) / GRAPH_FILES[name]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path} is unreadable ({exc}); retrain with --retrain") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise ModelError(f"{path} does not match the sha256 recorded in encoder.json: it was modified or "
                             "replaced. Refusing to load it; retrain with --retrain.")
        blobs[name] = data
    return blobs


def load(index_dir: str | os.PathLike, info: dict[str, Any], model, threads: int) -> OnnxGraphs | None:
    """ONNX Runtime sessions for a loaded model: its exported graphs (hash-checked), else converted now; each way
    checked against the model on a probe batch. None, with a warning, if that fails: TensorFlow then encodes."""
    blobs = saved_blobs(index_dir, info)  # a changed file raises ModelError: refused, not worked around
    try:
        if blobs is None:
            blobs = export(model)
            log.info("converted the encoder to ONNX in memory (its collection holds no exported graphs)")
        return checked(model, blobs, threads)
    except ConversionError as exc:
        log.warning("%s; encoding with TensorFlow instead", exc)
        return None
