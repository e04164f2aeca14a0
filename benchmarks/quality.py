"""Retrieval quality of raw pixels, PCA-30 and every autoencoder variant on labelled datasets.

    python benchmarks/quality.py [--datasets fashion-mnist mnist cifar10] [--variants conv denoising ...]
                                 [--epochs N] [--limit N] [--data ../shared/data] [--out benchmarks/results]
    python benchmarks/quality.py --render benchmarks/results/quality.json   # redraw the tables and chart only

Datasets (from ../shared/data; one whose files are absent is skipped with a message):
  Fashion-MNIST, MNIST  IDX .gz files; index = the 60,000 train images, queries = the 10,000 test images, 28x28x1.
  CIFAR-10              JPEG folders {train,test}/<class>/*.jpg; index = the 10,000 train images, queries = the
                        10,000 test images, 32x32x3.
Methods: raw pixels; PCA-30 fitted on the train split; every variant of encoder.model.VARIANTS, trained without
labels on the train split at the dataset's native size with a 30-number code and TrainConfig's defaults.

Measures, labels used only here:
  retrieval       precision@10 and mAP@100 by label agreement (indexer.evaluate; AP@k's normaliser is
                  min(k, relevant items in the index)), with L2 and with cosine distance between codes.
  robustness      recall@1 of the clean original when the query is a corrupted copy of a test image. The index is
                  the clean test images themselves: the original must be in the index for the question to make
                  sense, and test images were never trained on, so this measures invariance rather than memory.
                  Corruptions: gaussian noise (sigma 0.1 of the pixel range), one flat grey box over 25% of the
                  area at a random place, JPEG quality 30, a 90% centre crop resized back, brightness x1.2 on
                  even-numbered images and x0.8 on odd ones.
  reconstruction  squared error summed over each test image's pixels in [0, 1] units, averaged over the test set
                  (Hinton & Salakhutdinov 2006 report MNIST AE-30 3.00, PCA-30 13.87 in this unit).
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from indexer.evaluate import evaluate, knn, recall_at_1  # noqa: E402  (FAISS loads lazily, inside the functions)

DEFAULT_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
CODE_SIZE = 30
K, MAP_K = 10, 100
TITLES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10"}
# Issue 3's targets for the shipped default: (dataset, what, goal, higher is better). Search ranks by L2.
TARGETS = (
    ("fashion-mnist", "precision@10", 0.84, True),
    ("mnist", "precision@10", 0.975, True),
    ("cifar10", "precision@10", 0.33, True),
    ("mnist", "reconstruction", 3.00, False),
    ("fashion-mnist", "robustness", 0.95, True),
    ("mnist", "robustness", 0.95, True),
    ("cifar10", "robustness", 0.95, True),
    ("fashion-mnist", "training seconds", 300, False),
    ("mnist", "training seconds", 300, False),
)
CORRUPTIONS = ("noise", "occlusion", "jpeg30", "crop90", "brightness")
CORRUPTION_TITLES = {"noise": "noise σ 0.1", "occlusion": "occlusion 25%", "jpeg30": "JPEG q30",
                     "crop90": "crop 90%", "brightness": "brightness ±20%"}
STARTED = time.perf_counter()


def say(message: str) -> None:
    """A progress line with the time since the start."""
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", flush=True)


# Data ------------------------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """Train split (the index, and what models fit on) and test split (the queries), (n, S, S, C) uint8."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


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


def available(name: str, data: Path) -> str | None:
    """None when the dataset's files are present, else why it is skipped."""
    if name == "cifar10":
        needed = [data / "cifar10" / "classes.txt", data / "cifar10" / "train", data / "cifar10" / "test"]
    else:
        needed = [data / name / f for f in IDX_FILES]
    missing = [str(p) for p in needed if not p.exists()]
    return f"{missing[0]} is absent" if missing else None


def load(name: str, data: Path) -> Dataset:
    """Load one dataset by name."""
    return load_cifar(data / "cifar10") if name == "cifar10" else load_idx_dataset(name, data / name)


def subsample(ds: Dataset, limit: int | None) -> Dataset:
    """At most `limit` random images of each split (seeded; for quick runs)."""
    if not limit:
        return ds
    rng = np.random.default_rng(0)
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
    covariance = (centred.T @ centred).astype(np.float64) / len(x)  # (D, D)
    _, vectors = np.linalg.eigh(covariance)  # eigenvalues ascending
    w = np.ascontiguousarray(vectors[:, ::-1][:, :components], dtype=np.float32)  # (D, components)
    shape = train_x.shape[1:]

    def encode(p: np.ndarray) -> np.ndarray:
        return (flat(p) - mean) @ w  # (n, components)

    def reconstruct(p: np.ndarray) -> np.ndarray:
        return (encode(p) @ w.T + mean).reshape(len(p), *shape)  # linear PCA: not clipped to [0, 1]

    return Method(f"PCA-{components}", encode, reconstruct)


def autoencoder(variant: str, train_x: np.ndarray, epochs: int | None, model_dir: Path) -> Method:
    """Train `variant` on the train split's pixels (no labels) and wrap the saved Encoder."""
    from encoder.embed import Encoder
    from encoder.train import TrainConfig, train

    options = {"epochs": epochs} if epochs else {}
    config = TrainConfig(image_size=train_x.shape[1], channels=train_x.shape[3], code_size=CODE_SIZE,
                         variant=variant, **options)
    info = train(train_x, config, model_dir)
    encoder = Encoder.load(model_dir)
    kept = ("images", "held_out", "epochs_run", "best_epoch", "final_loss", "final_val_loss", "seconds")
    training = {k: info["training"].get(k) for k in kept} | {"epochs": config.epochs}
    return Method(variant, encoder.encode, lambda p: encoder.reconstruct(p).astype(np.float32) / 255.0, training)


# Measuring ---------------------------------------------------------------------------------------------------------

def measure(method: Method, ds: Dataset, corrupted: dict[str, np.ndarray]) -> dict:
    """Retrieval, robustness and reconstruction of one method on one dataset."""
    started = time.perf_counter()
    xb, xq = method.encode(ds.train_x), method.encode(ds.test_x)  # (n_train, d), (n_test, d)
    result: dict = {"dimensions": int(xb.shape[1]), "encode_seconds": round(time.perf_counter() - started, 2),
                    "training": method.training, "retrieval": {}, "robustness": {}}
    for metric in ("l2", "cosine"):
        r = evaluate(xb, ds.train_y, xq, ds.test_y, k=K, map_k=MAP_K, metric=metric)
        result["retrieval"][metric] = {f"precision_at_{K}": round(r["precision_at_k"], 4),
                                       f"map_at_{MAP_K}": round(r["map_at_k"], 4)}
    queries = {kind: method.encode(x) for kind, x in corrupted.items()}
    originals = np.arange(len(ds.test_x))
    for metric in ("l2", "cosine"):
        recalls = {kind: round(recall_at_1(knn(xq, q, 1, metric=metric)[1], originals), 4)
                   for kind, q in queries.items()}
        recalls["mean"] = round(float(np.mean(list(recalls.values()))), 4)
        result["robustness"][metric] = recalls
    if method.reconstruct is not None:
        x = ds.test_x.astype(np.float32) / 255.0
        sse = np.square(method.reconstruct(ds.test_x) - x).reshape(len(x), -1).sum(axis=1)  # (n,)
        result["reconstruction_sse"] = round(float(sse.mean()), 3)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def run_dataset(ds: Dataset, variants: list[str], epochs: int | None) -> dict:
    """Every method on one dataset."""
    import keras

    shape = "x".join(map(str, ds.train_x.shape[1:]))
    out = {"title": TITLES[ds.name], "index_images": len(ds.train_x), "queries": len(ds.test_x),
           "image_shape": shape, "methods": {}, "failed": {}}
    started = time.perf_counter()
    corrupted = {kind: corrupt(ds.test_x, kind, seed=i) for i, kind in enumerate(CORRUPTIONS)}
    say(f"{ds.name}: corrupted copies of {len(ds.test_x):,} test images in {time.perf_counter() - started:.1f}s")

    def record(method: Method) -> None:
        r = measure(method, ds, corrupted)
        out["methods"][method.name] = r
        line = ", ".join(f"{m} P@{K} {v[f'precision_at_{K}']:.4f} mAP@{MAP_K} {v[f'map_at_{MAP_K}']:.4f}"
                         for m, v in r["retrieval"].items())
        extra = f", reconstruction {r['reconstruction_sse']:.2f}" if "reconstruction_sse" in r else ""
        say(f"{ds.name} · {method.name}: {line}; robustness {r['robustness']['l2']['mean']:.4f}{extra} "
            f"({r['seconds']:.1f}s)")

    record(raw_pixels())
    started = time.perf_counter()
    method = pca(ds.train_x)
    say(f"{ds.name} · PCA-{CODE_SIZE}: fitted on {len(ds.train_x):,} images in {time.perf_counter() - started:.1f}s")
    record(method)
    for variant in variants:
        say(f"{ds.name} · {variant}: training on {len(ds.train_x):,} {shape} images")
        try:
            with tempfile.TemporaryDirectory(prefix=f"quality-{variant}-") as tmp:
                method = autoencoder(variant, ds.train_x, epochs, Path(tmp))
                t = method.training
                say(f"{ds.name} · {variant}: trained in {t['seconds']:.1f}s ({t['epochs_run']} epoch(s), best "
                    f"{t['best_epoch']}, held-out loss {t['final_val_loss'] or float('nan'):.5f})")
                record(method)
        except Exception as exc:  # one broken variant must not cost the hours spent on the others
            say(f"{ds.name} · {variant}: FAILED: {type(exc).__name__}: {exc}")
            out["failed"][variant] = f"{type(exc).__name__}: {exc}"
        keras.backend.clear_session()  # free the graph before the next model
    return out


# Reporting ---------------------------------------------------------------------------------------------------------

def _name(method: str, default_variant: str) -> str:
    return f"{method} (default)" if method == default_variant else method


def _figure(method: dict, what: str) -> float | None:
    if what == "precision@10":
        return method["retrieval"]["l2"][f"precision_at_{K}"]
    if what == "robustness":
        return method["robustness"]["l2"]["mean"]
    if what == "reconstruction":
        return method.get("reconstruction_sse")
    return (method.get("training") or {}).get("seconds")


def targets(results: dict) -> list[dict]:
    """The shipped default's figures beside the targets it is meant to meet (data sets that were run only)."""
    default, rows = results["settings"]["default_variant"], []
    for name, what, goal, higher in TARGETS:
        method = results["datasets"].get(name, {}).get("methods", {}).get(default)
        value = _figure(method, what) if method else None
        if value is None:
            continue
        met = value >= goal if higher else value <= goal
        pca = results["datasets"][name]["methods"].get(f"PCA-{CODE_SIZE}")
        rows.append({"dataset": name, "measure": what, "goal": goal, "higher_is_better": higher, "value": value,
                     "met": met, "pca": _figure(pca, what) if pca and what != "training seconds" else None})
    return rows


def markdown(results: dict) -> str:
    """The README's tables."""
    s = results["settings"]
    datasets = results["datasets"]
    default = s["default_variant"]
    budget = s.get("train_config_defaults", {}).get("time_budget")
    epochs = s["epochs"] if s["epochs"] else (f"up to {s['default_epochs']} (early stopping"
                                              + (f", {budget:.0f} s training budget)" if budget else ")"))
    lines = [f"Code size {s['code_size']}; autoencoders trained on the train split without labels, epochs: {epochs}"
             + (f"; **subsampled to at most {s['limit']:,} images per split**" if s["limit"] else "")
             + f". {results['machine']['cpus']} CPU cores, Python {results['machine']['python']}, "
             f"TensorFlow {results['machine']['tensorflow']}.", ""]
    methods = list(dict.fromkeys(m for d in datasets.values() for m in d["methods"]))
    rows = targets(results)
    if rows:
        lines += [f"### The default ({default}) against its targets (L2, the distance search ranks by)", "",
                  "| Data set | Measure | Target | Default | PCA-30 | Met |", "|---|---|---:|---:|---:|---|"]
        for r in rows:
            fmt = (lambda v: f"{v:.0f}") if r["measure"] == "training seconds" else (
                (lambda v: f"{v:.2f}") if r["measure"] == "reconstruction" else (lambda v: f"{v:.3f}"))
            lines.append(f"| {TITLES[r['dataset']]} | {r['measure']} | {'≥' if r['higher_is_better'] else '≤'} "
                         f"{fmt(r['goal'])} | {fmt(r['value'])} | {fmt(r['pca']) if r['pca'] is not None else ''} "
                         f"| {'yes' if r['met'] else '**no**'} |")
        lines.append("")
    lines += [f"### Precision@{K} (L2 distance between codes, index = train split, queries = test split)", "",
              "| Method | " + " | ".join(d["title"] for d in datasets.values()) + " |",
              "|---|" + "---:|" * len(datasets)]
    for m in methods:
        cells = [f"{d['methods'][m]['retrieval']['l2'][f'precision_at_{K}']:.3f}" if m in d["methods"] else ""
                 for d in datasets.values()]
        lines.append(f"| {_name(m, default)} | " + " | ".join(cells) + " |")
    for d in datasets.values():
        lines += ["", f"### {d['title']}: {d['index_images']:,} indexed train images, {d['queries']:,} test queries "
                  f"({d['image_shape']})", "",
                  f"| Method | P@{K} L2 | P@{K} cosine | mAP@{MAP_K} L2 | mAP@{MAP_K} cosine | Training s | Epochs |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for m, r in d["methods"].items():
            ret, t = r["retrieval"], r["training"] or {}
            lines.append(f"| {_name(m, default)} | {ret['l2'][f'precision_at_{K}']:.3f} | "
                         f"{ret['cosine'][f'precision_at_{K}']:.3f} | {ret['l2'][f'map_at_{MAP_K}']:.3f} | "
                         f"{ret['cosine'][f'map_at_{MAP_K}']:.3f} | {t.get('seconds', '')} | "
                         f"{t.get('epochs_run', '')} |")
        lines += ["", f"Robustness on {d['title']}: recall@1 of the clean original among the {d['queries']:,} clean "
                  "test images, query = a corrupted copy (L2; last column the mean with cosine)", "",
                  "| Method | " + " | ".join(CORRUPTION_TITLES[c] for c in CORRUPTIONS) + " | mean | mean cosine |",
                  "|---|" + "---:|" * (len(CORRUPTIONS) + 2)]
        for m, r in d["methods"].items():
            rob = r["robustness"]
            lines.append(f"| {_name(m, default)} | " + " | ".join(f"{rob['l2'][c]:.3f}" for c in CORRUPTIONS)
                         + f" | {rob['l2']['mean']:.3f} | {rob['cosine']['mean']:.3f} |")
    recon = [d for d in datasets.values() if any("reconstruction_sse" in r for r in d["methods"].values())]
    if recon:
        lines += ["", "### Reconstruction error: squared error summed over each test image's pixels ([0, 1] units), "
                  "mean over the test set", "",
                  "| Method | " + " | ".join(f"{d['title']} ({d['image_shape']})" for d in recon) + " |",
                  "|---|" + "---:|" * len(recon)]
        for m in methods:
            cells = [f"{d['methods'][m]['reconstruction_sse']:.2f}"
                     if "reconstruction_sse" in d["methods"].get(m, {}) else "" for d in recon]
            if any(cells):
                lines.append(f"| {_name(m, default)} | " + " | ".join(cells) + " |")
        lines += ["", "Hinton & Salakhutdinov (2006), MNIST, 30-number codes: deep autoencoder 3.00, PCA 13.87."]
    failed = [f"{d['title']} {v} ({why})" for d in datasets.values() for v, why in d.get("failed", {}).items()]
    if failed:
        lines += ["", "Failed: " + "; ".join(failed) + "."]
    if results.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> None:
    """Grouped bars: precision@10 (L2) of each method on each dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(results["datasets"].values())
    methods = list(dict.fromkeys(m for d in datasets for m in d["methods"]))
    width = 0.8 / len(methods)
    colours = ["#999999", "#555555"] + [plt.cm.tab10(i) for i in range(len(methods))]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 + len(datasets) * len(methods) * 0.42), 4.5), dpi=100)
    for j, m in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i, d in enumerate(datasets) if m in d["methods"]]
        ys = [d["methods"][m]["retrieval"]["l2"][f"precision_at_{K}"] for d in datasets if m in d["methods"]]
        bars = ax.bar(xs, ys, width * 0.95, label=_name(m, results["settings"]["default_variant"]),
                      color=colours[j % len(colours)])
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(datasets)), [d["title"] for d in datasets])
    ax.set_ylabel(f"precision@{K} (L2)")
    ax.set_ylim(0, 1.12)
    limit = results["settings"]["limit"]
    ax.set_title(f"Neighbours sharing the query's label, {CODE_SIZE}-number codes"
                 + (f"\n(quick run: at most {limit:,} images per split)" if limit else ""), fontsize=10)
    ax.legend(fontsize=8, ncol=min(4, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.08),
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(results: dict, out: Path) -> None:
    """quality.json, quality.md and quality.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "quality.md").write_text(markdown(results))
    chart(results, out / "quality.png")


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
    parser.add_argument("--variants", nargs="+", metavar="VARIANT", help="autoencoder variants (all of them)")
    parser.add_argument("--epochs", type=int, help="most training epochs (TrainConfig's default)")
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

    from encoder.model import VARIANTS  # read at run time: new variants join the benchmark by themselves
    from encoder.train import TrainConfig

    variants = list(args.variants or VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    import keras
    import tensorflow as tf

    defaults = TrainConfig()
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "tensorflow": tf.__version__, "keras": keras.__version__, "faiss": _version("faiss-cpu"),
                    "numpy": np.__version__},
        "settings": {"datasets": args.datasets, "variants": variants, "epochs": args.epochs,
                     "default_epochs": defaults.epochs, "default_variant": defaults.variant, "limit": args.limit,
                     "code_size": CODE_SIZE, "k": K, "map_k": MAP_K, "corruptions": list(CORRUPTIONS),
                     "train_config_defaults": asdict(defaults)},
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
        say(f"{name}: {len(ds.train_x):,} train + {len(ds.test_x):,} test images "
            f"{'x'.join(map(str, ds.train_x.shape[1:]))} loaded in {time.perf_counter() - started:.1f}s")
        results["datasets"][name] = run_dataset(ds, variants, args.epochs)
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
