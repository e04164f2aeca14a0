"""Out-of-domain queries: how often each candidate signal flags unseen in-domain images, digits and simple images.

    python benchmarks/novelty.py --index CIFAR_INDEX     # a collection built from CIFAR-10 training images

The groundwork of issue 15's point 5 (the product's `query.unusual` still uses the first rule below). Sets of
1,000 images each: unseen CIFAR-10 test images (in-domain, never trained on: flagging them is a false alarm),
MNIST digits, the harness's flat shapes, and one shape on a plain background. Every threshold is the 99.5th (or
99th) percentile of the signal over another 1,000 unseen CIFAR-10 test images, except today's rule, which uses the
collection's own (trained-on) reconstruction errors. Signals:

- error: the reconstruction error (mean squared, per pixel);
- corrected: the error divided by the error of an 8x8 blur of the image (simple images rebuild easily whatever
  they are; their blur rebuilds them easily too);
- mahalanobis: the raw latent's Mahalanobis distance under a Gaussian fitted to the collection's latents;
- nearest: the search code's distance to the nearest code of the collection.

Skips (exit 0) when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
SETS = 1_000


def blur_error(pixels: np.ndarray) -> np.ndarray:
    """(n, S, S, C) uint8 -> (n,) mean squared error of rebuilding each image from its 8x8 bilinear thumbnail."""
    from PIL import Image

    x = pixels.astype(np.float32) / 255.0
    side = pixels.shape[1]
    blurred = np.stack([
        np.asarray(Image.fromarray(p[:, :, 0] if p.shape[2] == 1 else p).resize((8, 8), Image.BILINEAR)
                   .resize((side, side), Image.BILINEAR)) for p in pixels]).astype(np.float32).reshape(x.shape) / 255.0
    return ((x - blurred) ** 2).mean(axis=(1, 2, 3))


def mahalanobis(z: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(n, d) latents -> (n,) squared Mahalanobis distances under N(mean, precision^-1)."""
    d = np.asarray(z, np.float64) - mean
    return np.einsum("ij,jk,ik->i", d, precision, d)


def gaussian(z: np.ndarray, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """The mean and precision matrix of (n, d) latents (a small ridge keeps a collapsed direction invertible)."""
    z = np.asarray(z, np.float64)
    return z.mean(axis=0), np.linalg.inv(np.cov(z.T) + ridge * np.eye(z.shape[1]))


def flag_rates(signals: dict[str, dict[str, np.ndarray]], calibration: str, rules: dict[str, tuple[str, ...]],
               percentile: float) -> dict[str, dict[str, float]]:
    """rule -> set -> share flagged, a rule firing when any of its signals is above its calibration percentile."""
    out: dict[str, dict[str, float]] = {}
    for rule, used in rules.items():
        limits = {s: np.percentile(signals[calibration][s], percentile) for s in used}
        out[rule] = {name: float(np.mean(np.any([values[s] > limits[s] for s in used], axis=0)))
                     for name, values in signals.items() if name != calibration}
    return out


def _image_sets(size: int, channels: int) -> dict[str, np.ndarray]:
    from PIL import Image, ImageDraw

    from benchmarks.harness import make_image
    from encoder.preprocess import load_image

    def from_pil(im) -> np.ndarray:
        buffer = io.BytesIO()
        im.save(buffer, "PNG")
        return load_image(buffer.getvalue(), size, channels).pixels

    test = DATA / "cifar10" / "test"
    classes = sorted(p.name for p in test.iterdir())

    def cifar(offset: int) -> np.ndarray:
        per = SETS // len(classes)
        return np.stack([load_image(f, size, channels).pixels for k in classes
                         for f in sorted((test / k).iterdir())[offset : offset + per]])

    raw = gzip.open(DATA / "mnist" / "t10k-images-idx3-ubyte.gz").read()
    digits = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:SETS]
    rng = np.random.default_rng(0)

    def plain(i: int) -> np.ndarray:
        im = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(200, 256, 3)))
        x0, y0 = rng.integers(5, 25, 2)
        x1, y1 = rng.integers(38, 60, 2)
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        draw = ImageDraw.Draw(im)
        (draw.ellipse if i % 2 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        return from_pil(im)

    return {"calibration": cifar(0), "unseen CIFAR-10": cifar(SETS // len(classes)),
            "MNIST": np.stack([from_pil(Image.fromarray(d)) for d in digits]),
            "shapes": np.stack([from_pil(make_image(s)) for s in range(SETS)]),
            "plain background": np.stack([plain(i) for i in range(SETS)])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="a collection built from CIFAR-10 training images")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if not (DATA / "cifar10").is_dir() or not (DATA / "mnist").is_dir():
        print(f"skipped: {DATA} has no cifar10 or mnist")
        return 0
    import tensorflow as tf

    from encoder.preprocess import load_image
    from indexer.collection import Collection

    collection = Collection.open(args.index)
    encoder = collection.encoder
    size, channels = encoder.image_size, encoder.channels

    def latents(pixels: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(encoder.model.latent(tf.constant(pixels[i : i + 256] / 255.0, tf.float32)))
                               for i in range(0, len(pixels), 256)])

    ids, _ = collection.codes()
    sample = ids[:: max(1, len(ids) // 2000)].tolist()
    paths = collection.relpaths(sample)
    mean, precision = gaussian(latents(np.stack([load_image(collection.images_root / paths[i], size, channels).pixels
                                                 for i in sample])))
    signals = {}
    for name, pixels in _image_sets(size, channels).items():
        codes, errors = encoder.encode_with_error(pixels)
        nearest, _ = collection.vectors.search(codes, 1)
        signals[name] = {"error": errors, "corrected": errors / (blur_error(pixels) + 1e-4),
                         "mahalanobis": mahalanobis(latents(pixels), mean, precision), "nearest": nearest[:, 0]}
    indexed = np.asarray(collection.calibration["error_quantiles"])
    today_limit = float(np.interp(99.0, np.linspace(0, 100, len(indexed)), indexed))
    rows = {"today: error above the 99th percentile of the indexed images":
            {name: float(np.mean(v["error"] > today_limit)) for name, v in signals.items() if name != "calibration"}}
    rows |= flag_rates(signals, "calibration", {f"{s} (unseen-calibrated, 99th)": (s,)
                                                for s in ("error", "corrected", "mahalanobis", "nearest")}, 99.0)
    rows |= flag_rates(signals, "calibration", {"corrected OR mahalanobis (99.5th each)": ("corrected", "mahalanobis"),
                                                "error OR corrected (99.5th each)": ("error", "corrected")}, 99.5)
    collection.close()
    names = [n for n in signals if n != "calibration"]
    lines = ["| Rule | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {rule} | " + " | ".join(f"{rates[n]:.3f}" for n in names) + " |" for rule, rates in rows.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "novelty.json").write_text(json.dumps({"index": str(args.index), "images": len(ids), "rules": rows},
                                                      indent=2))
    (args.out / "novelty.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
