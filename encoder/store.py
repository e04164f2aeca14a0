"""The model on disk: `encoder.keras` plus the `encoder.json` sidecar that stamps it with its sha256."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_FILE = "encoder.keras"
INFO_FILE = "encoder.json"
CURVE_FILE = "training_curve.png"
# The model format: bumped whenever the architecture code changes what a saved model means. Keras rebuilds a
# subclassed model from our current code and then loads its weights, so a model saved by another format cannot load.
# 2: normalised layers, mean-image output bias, the invariant variant (issue 13).
FORMAT_VERSION = 3  # 3: the search code's basis (whitening) joined the model


class ModelError(RuntimeError):
    """A missing, tampered or incompatible model; the message says what to do."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def has_model(index_dir: str | os.PathLike) -> bool:
    """True when `index_dir` holds a model and its sidecar."""
    return (Path(index_dir) / MODEL_FILE).is_file() and (Path(index_dir) / INFO_FILE).is_file()


def training_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's training summary without the per-epoch losses (those are drawn in training_curve.png)."""
    return {k: v for k, v in info.get("training", {}).items() if k != "history"}


def read_info(index_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed `encoder.json` of a collection."""
    path = Path(index_dir) / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"no encoder in {index_dir}: run "
                         f"`python -m indexer build IMAGES_DIR --index {index_dir}`") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is unreadable ({exc}); retrain with `python -m indexer train`") from None
    for key in ("image_size", "channels", "code_size", "variant", "sha256"):
        if key not in info:
            raise ModelError(f"{path} lacks {key!r}; retrain with `python -m indexer train`")
    return info


def save_model(model, index_dir: str | os.PathLike, training: dict[str, Any],
               novelty: dict[str, Any] | None = None, graphs: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Write `encoder.keras`, the exported graphs and, last, `encoder.json`, each atomically; return the sidecar.

    `novelty` is the out-of-domain calibration (encoder.novelty.Novelty.to_dict) measured after training; `graphs`
    the model's inference graphs as ONNX (encoder.onnx_graphs.export), recorded in the sidecar by their sha256."""
    import keras  # heavy: only when a model is actually written

    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=index_dir, prefix=".model-") as tmp:
        staged = Path(tmp) / MODEL_FILE  # Keras insists on the .keras suffix
        model.save(staged)
        data = staged.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    info = {
        "format": FORMAT_VERSION,
        "image_size": model.image_size,
        "channels": model.channels,
        "code_size": model.code_size,
        "variant": model.variant,
        "sha256": sha,
        "keras_version": keras.__version__,
        "training": training,
    } | ({"novelty": novelty} if novelty is not None else {})
    atomic_write_bytes(index_dir / MODEL_FILE, data)
    from encoder.onnx_graphs import GRAPH_FILES  # no heavy import: the module imports its runtime lazily

    for name, filename in GRAPH_FILES.items():
        if graphs and name in graphs:
            atomic_write_bytes(index_dir / filename, graphs[name])
        else:  # a previous model's graph: never loaded (the sidecar does not record it), but not left to confuse
            (index_dir / filename).unlink(missing_ok=True)
    if graphs:
        info["onnx"] = {name: hashlib.sha256(blob).hexdigest() for name, blob in graphs.items()}
    atomic_write_bytes(index_dir / INFO_FILE, json.dumps(info, indent=2).encode())
    log.info("saved model sha256:%s to %s", sha[:12], index_dir)
    return info


def model_files(index_dir: str | os.PathLike) -> list[str]:
    """The names of the files that make up a collection's model: encoder.keras, encoder.json, exported graphs."""
    from encoder.onnx_graphs import GRAPH_FILES

    return [MODEL_FILE, INFO_FILE, *(GRAPH_FILES[name] for name in read_info(index_dir).get("onnx", {}))]


def copy_model(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy a collection's model (every file of `model_files`) into the folder `target`."""
    import shutil

    Path(target).mkdir(parents=True, exist_ok=True)
    for name in model_files(source):
        shutil.copy2(Path(source) / name, Path(target) / name)


def verified_model_path(index_dir: str | os.PathLike, info: dict[str, Any]) -> Path:
    """The model file, once this version can read it and its bytes are the ones `encoder.json` records."""
    path = Path(index_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing; retrain with `python -m indexer build ... --retrain`")
    if info.get("format") != FORMAT_VERSION:
        raise ModelError(f"the encoder in {index_dir} was made by another version of lookalike (model format "
                         f"{info.get('format')}, this version reads {FORMAT_VERSION}); re-encode the collection with "
                         f"`python -m indexer build IMAGES_DIR --index {index_dir} --retrain`")
    actual = file_sha256(path)
    if actual != info["sha256"]:
        raise ModelError(
            f"{path} does not match the sha256 recorded in {INFO_FILE} "
            f"(file {actual[:12]}, recorded {info['sha256'][:12]}): it was modified or replaced. "
            "Refusing to load it; retrain with `python -m indexer build IMAGES_DIR --index DIR --retrain`."
        )
    return path
