"""TensorFlow's thread pools, sized once per process so that encoding never oversubscribes the cores."""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count, inside containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_threads(intra_op: int = 0, inter_op: int = 1) -> dict[str, int]:
    """Set TensorFlow's intra-op (0: one per core) and inter-op pools before its first operation.

    One inter-op thread: our graphs are a single chain of layers, so ops have nothing to run beside; concurrency
    comes from batching and from the callers' threads. Called again after TensorFlow has started (several apps
    in one test process), it keeps the pools it has and says so.
    """
    import tensorflow as tf

    wanted = {"intra_op": intra_op or cores(), "inter_op": inter_op or 1}
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
