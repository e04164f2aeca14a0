"""How this process runs the encoder: the inference runtime and the thread pools, chosen once per process."""
from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

RUNTIMES = ("onnx", "tensorflow")
DEFAULT_RUNTIME = "onnx"  # ONNX Runtime: 4-30x faster than TensorFlow for one image, as fast for a batch (issue 17)
_chosen: dict[str, Any] = {"runtime": DEFAULT_RUNTIME, "intra_op": 0}


def inference_runtime(raw: str) -> str:
    """Parse a runtime name: onnx or tensorflow."""
    name = raw.strip().lower()
    if name not in RUNTIMES:
        raise ValueError(f"expected one of {', '.join(RUNTIMES)}")
    return name


def configure_runtime(name: str) -> None:
    """Encode with `name` (see RUNTIMES) in every encoder this process loads from now on."""
    _chosen["runtime"] = inference_runtime(name)


def chosen_runtime() -> str:
    """The runtime configure_runtime chose (ONNX Runtime unless told otherwise)."""
    return str(_chosen["runtime"])


def compute_threads() -> int:
    """Threads one encoding call may use: what configure_threads set, else one per core."""
    return int(_chosen["intra_op"]) or cores()


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count, inside containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_threads(intra_op: int = 0, inter_op: int = 1) -> dict[str, int]:
    """Set the intra-op (0: one per core) and inter-op pools: TensorFlow's before its first operation, and those of
    the ONNX Runtime sessions loaded after this call.

    One inter-op thread: our graphs are a single chain of layers, so ops have nothing to run beside; concurrency
    comes from batching and from the callers' threads. Called again after TensorFlow has started (several apps
    in one test process), it keeps the pools it has and says so.
    """
    import tensorflow as tf

    wanted = {"intra_op": intra_op or cores(), "inter_op": inter_op or 1}
    _chosen["intra_op"] = wanted["intra_op"]  # ONNX Runtime's sessions take the same count
    try:
        tf.config.threading.set_intra_op_parallelism_threads(wanted["intra_op"])
        tf.config.threading.set_inter_op_parallelism_threads(wanted["inter_op"])
    except RuntimeError:  # "... cannot be modified after initialization"
        current = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                   "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
        if current != wanted:
            log.debug("TensorFlow already running with %s threads; wanted %s", current, wanted)
        return current
    log.debug("TensorFlow threads: %s", wanted)
    return wanted


def cpu_features() -> list[str]:
    """The vector instruction sets this CPU offers that matter for inference speed (Linux; [] elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return []
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "amx_tile": "AMX"}
    return [label for flag, label in names.items() if flag in flags]
