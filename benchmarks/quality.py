"""Retrieval quality of raw pixels, PCA-30, perceptual hashes and every autoencoder variant on labelled data.

    python benchmarks/quality.py [--datasets demo fashion-mnist mnist cifar10] [--variants all | invariant sparse ...]
                                 [--steps N] [--whitening POWER ...] [--limit N] [--data ../shared/data]
                                 [--out benchmarks/results]
    python benchmarks/quality.py --render benchmarks/results/quality.json   # redraw the tables and chart only

Datasets (one whose files are absent is skipped with a message):
  demo                  the repo's own data/images: 1,200 Caltech-101 photos in 30 folders, at the input size
                        `indexer build` picks for it; every image queries the other 1,199 (leave-one-out), a
                        neighbour is right when it comes from the same folder: what `indexer evaluate` reports.
  Fashion-MNIST, MNIST  ../shared/data IDX .gz files; index = the 60,000 train images, queries = the 10,000 test
                        images, 28x28x1.
  CIFAR-10              ../shared/data JPEG folders {train,test}/<class>/*.jpg; index = the 10,000 train images,
                        queries = the 10,000 test images, 32x32x3.
Methods: raw pixels; PCA-30 fitted on the index images; the 64-bit perceptual hashes pHash and dHash (imagehash,
compared by Hamming distance: what near-duplicate finders use); the shipped default autoencoder variant, or those
of --variants (`all`: every one of encoder.variants.VARIANTS, about 7x the time), trained without labels on the
index images with TrainConfig's defaults, as `indexer build` trains it.

Measures, labels used only here:
  retrieval       precision@10 and mAP@100 by label agreement (indexer.evaluate; AP@k's normaliser is
                  min(k, relevant items in the index)), with L2 and with cosine distance between codes.
  robustness      recall@1 of the clean original when the query is an edited copy of an image (ties shared:
                  indexer.evaluate.copy_recall_at_1). The index is the clean query images themselves (test images,
                  never trained on; for the demo, its own images), so this measures invariance, not memory.
                  Edits: gaussian noise (sigma 0.1 of the pixel range), one flat grey box over 25% of the area at a
                  random place, JPEG quality 30, a 90% centre crop resized back, brightness x1.2 on even-numbered
                  images and x0.8 on odd ones.
  reconstruction  squared error summed over each test image's pixels in [0, 1] units, averaged over the test set
                  (Hinton & Salakhutdinov 2006 report MNIST AE-30 3.00, PCA-30 13.87 in this unit).
  cost            training seconds, steps and images/s; encoding time of one image alone (what a query pays) and
                  images/s in batches of 256 (what indexing pays).
Writes quality.json, quality.md (the README's tables) and quality.png (precision@10 per method and dataset) to
--out after each dataset, so an interrupted run keeps what it finished. Nothing is cached between runs.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from quality_report import TITLES, markdown, targets, write  # noqa: E402

from indexer.copies import SHORTLIST, copy_first, sketches  # noqa: E402
from indexer.evaluate import copy_recall_at_1, evaluate, knn  # noqa: E402  (FAISS loads lazily, inside them)

DEFAULT_DATA = REPO.parent / "shared" / "data"
DEMO = REPO / "data" / "images"
RESULTS = REPO / "benchmarks" / "results"
CODE_SIZE = 30
K, MAP_K = 10, 100
CORRUPTIONS = ("noise", "occlusion", "jpeg30", "crop90", "brightness")
STARTED = time.perf_counter()


def say(message: str) -> None:
    """A progress line with the time since the start."""
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", flush=True)


# Data ------------------------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """Index images (what models fit on) and query images, (n, S, S, C) uint8 with labels.

    leave_one_out: the queries are the index itself, each query's own row left out of its results (the demo).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    leave_one_out: bool = False


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (.gz) as a uint8 array of its recorded shape."""
    data = gzip.decompress(path.read_bytes())
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def load_idx_dataset(name: str, folder: Path) -> Dataset:
    """MNIST-style IDX archives: 28x28 grey images with a trailing channel axis."""
    train_x, train_y, test_x, test_y = (read_idx(folder / f) for f in IDX_FILES)
    return Dataset(name, train_x[..., None], train_y.astype(np.int64), test_x[..., None], test_y.astype(np.int64))


def load_cifar(folder: Path) -> Dataset:
    """The CIFAR-10 JPEG folders, decoded once with Pillow into uint8 arrays; the label is the class folder."""
    classes = (folder / "classes.txt").read_text().split()
    splits = []
    for split in ("train", "test"):
        images, labels = [], []
        for label, cls in enumerate(classes):
            for path in sorted((folder / split / cls).glob("*.jpg")):
                with Image.open(path) as im:
                    images.append(np.asarray(im.convert("RGB")))
                labels.append(label)
        splits += [np.stack(images), np.array(labels, dtype=np.int64)]
    return Dataset("cifar10", *splits)


def load_demo(folder: Path = DEMO) -> Dataset:
    """The demo photos through the product's own path: the input size `indexer build` picks, load_image's pixels."""
    from encoder.options import TrainConfig
    from encoder.preprocess import load_image
    from indexer.scan import scan
    from indexer.training_sample import natural_image_size

    entries = [e for e in scan(folder).images if "/" in e.relpath]
    size = natural_image_size(folder, entries, TrainConfig().image_size)
    x = np.stack([load_image(folder / e.relpath, size).pixels for e in entries])
    labels = sorted({e.relpath.split("/", 1)[0] for e in entries})
    y = np.array([labels.index(e.relpath.split("/", 1)[0]) for e in entries], dtype=np.int64)
    return Dataset("demo", x, y, x, y, leave_one_out=True)


def available(name: str, data: Path) -> str | None:
    """None when the dataset's files are present, else why it is skipped."""
    if name == "demo":
        needed = [DEMO]
    elif name == "cifar10":
        needed = [data / "cifar10" / "classes.txt", data / "cifar10" / "train", data / "cifar10" / "test"]
    else:
        needed = [data / name / f for f in IDX_FILES]
    missing = [str(p) for p in needed if not p.exists()]
    return f"{missing[0]} is absent" if missing else None


def load(name: str, data: Path) -> Dataset:
    """Load one dataset by name."""
    if name == "demo":
        return load_demo()
    return load_cifar(data / "cifar10") if name == "cifar10" else load_idx_dataset(name, data / name)


def subsample(ds: Dataset, limit: int | None) -> Dataset:
    """At most `limit` random images of each split (seeded; for quick runs)."""
    if not limit:
        return ds
    rng = np.random.default_rng(0)
    if ds.leave_one_out:
        pick = np.sort(rng.permutation(len(ds.train_x))[:limit])
        x, y = ds.train_x[pick], ds.train_y[pick]
        return Dataset(ds.name, x, y, x, y, leave_one_out=True)
    pick = [np.sort(rng.permutation(len(x))[:limit]) for x in (ds.train_x, ds.test_x)]
    return Dataset(ds.name, ds.train_x[pick[0]], ds.train_y[pick[0]], ds.test_x[pick[1]], ds.test_y[pick[1]])


# Corruptions: (n, S, S, C) uint8 in, same out; seeded, so every method sees the same damaged copies --------------

def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def _unpil(im: Image.Image, channels: int) -> np.ndarray:
    a = np.asarray(im)
    return a[..., None] if channels == 1 else a


def corrupt(x: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """A corrupted copy of every image."""
    rng = np.random.default_rng(seed)
    n, side, channels = len(x), x.shape[1], x.shape[3]
    if kind == "noise":
        return np.clip(x + rng.normal(0.0, 0.1 * 255, x.shape), 0, 255).round().astype(np.uint8)
    if kind == "brightness":
        factor = np.where(np.arange(n) % 2 == 0, 1.2, 0.8)[:, None, None, None]
        return np.clip(x * factor, 0, 255).round().astype(np.uint8)
    out = np.empty_like(x)
    if kind == "occlusion":
        box = side // 2  # a square over a quarter of the area
        out[:] = x
        corners = rng.integers(0, side - box + 1, (n, 2))
        greys = rng.integers(0, 256, n)
        for i, (top, left) in enumerate(corners):
            out[i, top : top + box, left : left + box] = greys[i]
        return out
    if kind == "jpeg30":
        for i in range(n):
            buffer = io.BytesIO()
            _pil(x[i]).save(buffer, format="JPEG", quality=30)
            buffer.seek(0)
            out[i] = _unpil(Image.open(buffer), channels)
        return out
    if kind == "crop90":
        crop = int(round(0.9 * side))
        offset = (side - crop) // 2
        for i in range(n):
            im = _pil(x[i]).crop((offset, offset, offset + crop, offset + crop))
            out[i] = _unpil(im.resize((side, side), Image.BILINEAR), channels)
        return out
    raise ValueError(f"unknown corruption {kind!r}")


# Methods: each turns (n, S, S, C) uint8 into (n, d) float32 codes, and maybe back into [0, 1] images --------------

@dataclass
class Method:
    """A way of turning images into vectors."""

    name: str
    encode: Callable[[np.ndarray], np.ndarray]
    reconstruct: Callable[[np.ndarray], np.ndarray] | None = None  # -> (n, S, S, C) float in [0, 1]
    training: dict | None = None
    encoder: object = None  # the autoencoders' encoder.embed.Encoder, for timing
    checked: bool = False  # also measure search as the service runs it: these codes, then the copy check


def flat(x: np.ndarray) -> np.ndarray:
    """(n, S, S, C) uint8 -> (n, S*S*C) float32 in [0, 1]."""
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


def raw_pixels() -> Method:
    """The pixels themselves as the vector."""
    return Method("raw pixels", flat)


def pca(train_x: np.ndarray, components: int = CODE_SIZE) -> Method:
    """PCA fitted on the train split: the top eigenvectors of the pixel covariance."""
    x = flat(train_x)  # (n, D)
    mean = x.mean(axis=0)  # (D,)
    centred = x - mean
    if len(x) < x.shape[1]:  # fewer images than pixels (the demo's 1,200 at 64x64x3): SVD of the data itself
        _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
        vectors = vt.T  # (D, n), strongest first
    else:
        covariance = (centred.T @ centred).astype(np.float64) / len(x)  # (D, D)
        vectors = np.linalg.eigh(covariance)[1][:, ::-1]  # eigenvalues ascending, so reversed
    w = np.ascontiguousarray(vectors[:, :components], dtype=np.float32)  # (D, components)
    shape = train_x.shape[1:]

    def encode(p: np.ndarray) -> np.ndarray:
        return (flat(p) - mean) @ w  # (n, components)

    def reconstruct(p: np.ndarray) -> np.ndarray:
        return (encode(p) @ w.T + mean).reshape(len(p), *shape)  # linear PCA: not clipped to [0, 1]

    return Method(f"PCA-{components}", encode, reconstruct, checked=True)


def perceptual_hash(kind: str) -> Method:
    """imagehash's 64-bit pHash or dHash as a 0/1 vector: L2 distance squared between two is their Hamming distance."""
    import imagehash

    fn = {"pHash": imagehash.phash, "dHash": imagehash.dhash}[kind]

    def encode(x: np.ndarray) -> np.ndarray:
        return np.stack([fn(_pil(im)).hash.reshape(-1) for im in x]).astype(np.float32)  # (n, 64)

    return Method(kind, encode)


def autoencoder(variant: str, train_x: np.ndarray, steps: int | None, model_dir: Path) -> Method:
    """Train `variant` on the train split's pixels (no labels) and wrap the saved Encoder."""
    from encoder.embed import Encoder
    from encoder.options import TrainConfig
    from encoder.train import train

    config = TrainConfig(image_size=train_x.shape[1], channels=train_x.shape[3], code_size=CODE_SIZE,
                         variant=variant, **({"steps": steps} if steps else {}))
    info = train(train_x, config, model_dir)
    encoder = Encoder.load(model_dir)
    kept = ("images", "held_out", "batch_size", "steps_run", "epochs_run", "final_loss", "final_val_loss",
            "mean_image_loss", "seconds", "images_per_second", "history")
    training = {k: info["training"].get(k) for k in kept}
    return Method(variant, encoder.encode, lambda p: encoder.reconstruct(p).astype(np.float32) / 255.0, training,
                  encoder, checked=True)


def whitened(method: Method, train_x: np.ndarray, power: float) -> Method:
    """An autoencoder's latent codes whitened post hoc: centred, each principal direction scaled by s^-power, unit.

    power 1 is full whitening, 0.5 halves the spread between strong and weak directions. Fitted on the index
    images' latents (no labels). An experiment for the next default, measured on the same trained model.
    """
    model = method.encoder.model

    def latent(pixels: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(model.latent(pixels[i : i + 512].astype(np.float32) / 255.0))
                               for i in range(0, len(pixels), 512)])  # (n, code_size)

    z = latent(train_x)
    mean = z.mean(axis=0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    project = (vt.T / (s / np.sqrt(len(z)) + 1e-6) ** power).astype(np.float32)  # (code_size, code_size)

    def encode(pixels: np.ndarray) -> np.ndarray:
        w = (latent(pixels) - mean) @ project
        return w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)

    return Method(f"{method.name}, whitened^{power:g}", encode, None, None, None, checked=True)


def checked_ranking(xb: np.ndarray, sb: np.ndarray, xq: np.ndarray, sq: np.ndarray, k: int,
                    leave_one_out: bool = False) -> np.ndarray:
    """(nq, k) rows of xb as search returns them: the code shortlist (L2), then the copy check (indexer.copies)."""
    _, shortlist = knn(xb, xq, max(SHORTLIST, k), leave_one_out=leave_one_out)  # (nq, SHORTLIST)
    ranked = np.empty((len(xq), k), np.int64)
    for i, row in enumerate(shortlist):
        order, _ = copy_first(row, sq[i], sb[row])
        ranked[i] = order[:k]
    return ranked


def encode_cost(encoder, pixels: np.ndarray, single: int = 200) -> dict:
    """Milliseconds to encode one image alone (median, what a query pays) and images/s in batches (indexing)."""
    one = pixels[:1]
    encoder.encode(one)  # traced
    times = []
    for _ in range(single):
        started = time.perf_counter()
        encoder.encode(one)
        times.append((time.perf_counter() - started) * 1000)
    batch = np.resize(pixels, (max(len(pixels), 4096), *pixels.shape[1:]))[:4096]
    encoder.encode(batch[:256])
    started = time.perf_counter()
    encoder.encode(batch)
    return {"single_ms": round(float(np.median(times)), 3),
            "batch_images_per_s": round(len(batch) / (time.perf_counter() - started), 1)}


# Measuring ---------------------------------------------------------------------------------------------------------

def measure(method: Method, ds: Dataset, corrupted: dict[str, np.ndarray]) -> dict:
    """Retrieval, robustness and reconstruction of one method on one dataset."""
    started = time.perf_counter()
    xb = method.encode(ds.train_x)  # (n_index, d)
    xq = xb if ds.leave_one_out else method.encode(ds.test_x)  # (n_queries, d)
    result: dict = {"dimensions": int(xb.shape[1]), "encode_seconds": round(time.perf_counter() - started, 2),
                    "training": method.training, "retrieval": {}, "robustness": {}}
    for metric in ("l2", "cosine"):
        if ds.leave_one_out:
            r = evaluate(xb, ds.train_y, k=K, map_k=MAP_K, metric=metric)
        else:
            r = evaluate(xb, ds.train_y, xq, ds.test_y, k=K, map_k=MAP_K, metric=metric)
        result["retrieval"][metric] = {f"precision_at_{K}": round(r["precision_at_k"], 4),
                                       f"map_at_{MAP_K}": round(r["map_at_k"], 4)}
    queries = {kind: method.encode(x) for kind, x in corrupted.items()}
    for metric in ("l2", "cosine"):
        recalls = {kind: round(copy_recall_at_1(xq, q, metric=metric), 4) for kind, q in queries.items()}
        recalls["mean"] = round(float(np.mean(list(recalls.values()))), 4)
        result["robustness"][metric] = recalls
    if method.checked:
        # What a user of the service gets: the copy check reorders the code shortlist by the images' sketches.
        sb = sketches(ds.train_x)
        sq = sb if ds.leave_one_out else sketches(ds.test_x)
        top = checked_ranking(xb, sb, xq, sq, K, leave_one_out=ds.leave_one_out)
        result["retrieval"]["checked"] = {f"precision_at_{K}": round(float((ds.train_y[top] == ds.test_y[:, None])
                                                                            .mean()), 4)}
        originals = np.arange(len(ds.test_x))
        recalls = {kind: round(float((checked_ranking(xq, sq, q, sketches(corrupted[kind]), 1)[:, 0] == originals)
                                     .mean()), 4) for kind, q in queries.items()}
        recalls["mean"] = round(float(np.mean(list(recalls.values()))), 4)
        result["robustness"]["checked"] = recalls
    if method.reconstruct is not None:
        x = ds.test_x.astype(np.float32) / 255.0
        sse = np.square(method.reconstruct(ds.test_x) - x).reshape(len(x), -1).sum(axis=1)  # (n,)
        result["reconstruction_sse"] = round(float(sse.mean()), 3)
    if method.encoder is not None:
        result["encoding"] = encode_cost(method.encoder, ds.test_x)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def run_dataset(ds: Dataset, variants: list[str], steps: int | None, whitening: tuple[float, ...] = ()) -> dict:
    """Every method on one dataset."""
    import keras

    shape = "x".join(map(str, ds.train_x.shape[1:]))
    out = {"title": TITLES[ds.name], "index_images": len(ds.train_x), "queries": len(ds.test_x),
           "leave_one_out": ds.leave_one_out, "image_shape": shape, "methods": {}, "failed": {}}
    started = time.perf_counter()
    corrupted = {kind: corrupt(ds.test_x, kind, seed=i) for i, kind in enumerate(CORRUPTIONS)}
    say(f"{ds.name}: corrupted copies of {len(ds.test_x):,} query images in {time.perf_counter() - started:.1f}s")

    def record(method: Method) -> None:
        r = measure(method, ds, corrupted)
        out["methods"][method.name] = r
        line = ", ".join(f"{m} P@{K} {v[f'precision_at_{K}']:.4f}" + (f" mAP@{MAP_K} {v[f'map_at_{MAP_K}']:.4f}"
                                                                  if f"map_at_{MAP_K}" in v else "")
                         for m, v in r["retrieval"].items())
        if "checked" in r["robustness"]:
            line += f"; robustness with the copy check {r['robustness']['checked']['mean']:.4f}"
        extra = f", reconstruction {r['reconstruction_sse']:.2f}" if "reconstruction_sse" in r else ""
        say(f"{ds.name} · {method.name}: {line}; robustness {r['robustness']['l2']['mean']:.4f}{extra} "
            f"({r['seconds']:.1f}s)")

    record(raw_pixels())
    started = time.perf_counter()
    method = pca(ds.train_x)
    say(f"{ds.name} · PCA-{CODE_SIZE}: fitted on {len(ds.train_x):,} images in {time.perf_counter() - started:.1f}s")
    record(method)
    for kind in ("pHash", "dHash"):
        record(perceptual_hash(kind))
    for variant in variants:
        say(f"{ds.name} · {variant}: training on {len(ds.train_x):,} {shape} images")
        try:
            with tempfile.TemporaryDirectory(prefix=f"quality-{variant}-") as tmp:
                method = autoencoder(variant, ds.train_x, steps, Path(tmp))
                t = method.training
                say(f"{ds.name} · {variant}: trained in {t['seconds']:.1f}s ({t['steps_run']} steps of "
                    f"{t['batch_size']}, {t['images_per_second']:.0f} images/s; held-out loss "
                    f"{t['final_val_loss'] or float('nan'):.5f}, "
                    f"mean image {t['mean_image_loss'] or float('nan'):.5f})")
                record(method)
                for power in whitening:
                    record(whitened(method, ds.train_x, power))
        except Exception as exc:  # one broken variant must not cost the hours spent on the others
            say(f"{ds.name} · {variant}: FAILED: {type(exc).__name__}: {exc}")
            out["failed"][variant] = f"{type(exc).__name__}: {exc}"
        keras.backend.clear_session()  # free the graph before the next model
    return out


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(TITLES), default=list(TITLES), metavar="NAME",
                        help=f"any of {', '.join(TITLES)} (all)")
    parser.add_argument("--variants", nargs="+", metavar="VARIANT",
                        help="autoencoder variants, or all (the shipped default)")
    parser.add_argument("--steps", type=int, help="training steps (TrainConfig's automatic budget)")
    parser.add_argument("--whitening", type=float, nargs="+", default=[], metavar="POWER",
                        help="also measure each autoencoder's codes whitened post hoc with these powers (1: full)")
    parser.add_argument("--limit", type=int, help="at most this many random images per split, for a quick run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the datasets")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go (benchmarks/results)")
    parser.add_argument("--render", type=Path, metavar="QUALITY_JSON",
                        help="only redraw quality.md and quality.png in --out from an earlier run's JSON")
    args = parser.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
        results["targets"] = targets(results)
        write(results, args.out)
        print(markdown(results))
        return 0

    from encoder.options import TrainConfig
    from encoder.variants import DEFAULT_VARIANT, VARIANTS  # read at run time: new variants join by themselves

    variants = list(VARIANTS) if args.variants == ["all"] else list(args.variants or [DEFAULT_VARIANT])
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if DEFAULT_VARIANT in variants:  # the default first: its figures are the ones the README quotes
        variants.remove(DEFAULT_VARIANT)
        variants.insert(0, DEFAULT_VARIANT)
    import keras
    import tensorflow as tf

    from encoder.runtime import cpu_features

    defaults = TrainConfig()
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "cpu_features": cpu_features(), "tensorflow": tf.__version__, "keras": keras.__version__,
                    "faiss": _version("faiss-cpu"), "imagehash": _version("imagehash"), "numpy": np.__version__},
        "settings": {"datasets": args.datasets, "variants": variants, "steps": args.steps, "whitening": args.whitening,
                     "default_variant": DEFAULT_VARIANT, "limit": args.limit, "code_size": CODE_SIZE, "k": K,
                     "map_k": MAP_K, "corruptions": list(CORRUPTIONS), "train_config_defaults": defaults.__dict__},
        "datasets": {}, "skipped": {},
    }
    for name in args.datasets:
        why = available(name, args.data)
        if why:
            say(f"{name}: skipped, {why}")
            results["skipped"][name] = why
            continue
        started = time.perf_counter()
        ds = subsample(load(name, args.data), args.limit)
        say(f"{name}: {len(ds.train_x):,} index + {len(ds.test_x):,} query images "
            f"{'x'.join(map(str, ds.train_x.shape[1:]))} loaded in {time.perf_counter() - started:.1f}s")
        results["datasets"][name] = run_dataset(ds, variants, args.steps, tuple(args.whitening))
        results["targets"] = targets(results)
        write(results, args.out)
        say(f"{name}: done; results so far in {args.out}")
    if not results["datasets"]:
        print("no dataset was found; nothing written")
        return 0
    print()
    print(markdown(results))
    say(f"wrote {args.out / 'quality.json'}, quality.md and quality.png")
    return 1 if any(d["failed"] for d in results["datasets"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
