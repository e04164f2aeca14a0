"""Out-of-domain queries: how often `query.unusual` fires on unseen in-domain images, digits and simple images.

    python benchmarks/novelty.py [--work DIR]     # builds three collections once (~15 min on 2 cores), then measures

Three collections, each built by `indexer build` with the defaults: 5,000 CIFAR-10 training images, 5,000
Fashion-MNIST training images, and the demo's 1,200 Caltech-101 photos (`data/images`). Each is queried with
1,000 images of every kind (fewer where the data set holds fewer): unseen in-domain images (test images, or
Caltech-101 photos the demo does not hold) — flagging them is a false alarm — and out-of-domain ones: MNIST
digits, the harness's flat shapes (a background, four shapes, a little noise), one shape on a plain background.

Every rate is measured through the serving path (`Encoder.encode_for_query`, then `Encoder.judge`, as the
server runs them), for the product's rule (either signal of encoder.novelty), each signal alone, and the rule
of models trained before it (error above the 99th percentile of the indexed images' errors).

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
DEMO = REPO / "data" / "images"
SETS = 1_000
TRAIN_IMAGES = 5_000


def _idx_images(name: str, split: str, count: int, offset: int = 0) -> np.ndarray:
    raw = gzip.open(DATA / name / f"{split}-images-idx3-ubyte.gz").read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[offset : offset + count]


def _write_folders(kind: str, folder: Path) -> None:
    """The images a collection is built from, as files: CIFAR-10 or Fashion-MNIST training images by class."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "cifar10":
        train = DATA / "cifar10" / "train"
        classes = sorted(p.name for p in train.iterdir())
        for label in classes:
            (folder / label).mkdir(exist_ok=True)
            for f in sorted((train / label).iterdir())[: TRAIN_IMAGES // len(classes)]:
                (folder / label / f.name).write_bytes(f.read_bytes())
    else:
        labels = np.frombuffer(gzip.open(DATA / "fashion-mnist" / "train-labels-idx1-ubyte.gz").read(), np.uint8,
                               offset=8)
        for i, image in enumerate(_idx_images("fashion-mnist", "train", TRAIN_IMAGES)):
            (folder / str(labels[i])).mkdir(exist_ok=True)
            Image.fromarray(image).save(folder / str(labels[i]) / f"{i:05d}.png")


def build_collections(work: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (images folder, collection folder), built once into `work` (reused when its model is current)."""
    from indexer.__main__ import main as indexer

    collections = {}
    for name, kind in (("CIFAR-10", "cifar10"), ("Fashion-MNIST", "fashion-mnist"), ("Caltech-101 demo", "demo")):
        images = DEMO if kind == "demo" else work / f"{kind}-images"
        index = work / f"{kind}-index"
        info = index / "encoder.json"
        if not (info.is_file() and "novelty" in json.loads(info.read_text())):
            if kind != "demo" and not images.is_dir():
                _write_folders(kind, images)
            retrain = ["--retrain"] if info.is_file() else []
            indexer(["build", str(images), "--index", str(index), "--quiet", *retrain])
        collections[name] = (images, index)
    return collections


def _query_sets(name: str, size: int, channels: int) -> dict[str, np.ndarray]:
    """The unseen in-domain set first, then the out-of-domain ones, as (n, S, S, C) uint8 at the model's size."""
    from PIL import Image, ImageDraw

    from benchmarks.harness import make_image
    from encoder.preprocess import load_image

    def pixels(image) -> np.ndarray:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return load_image(buffer.getvalue(), size, channels).pixels

    rng = np.random.default_rng(0)

    def plain(i: int):
        image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(200, 256, 3)))
        x0, y0 = rng.integers(5, 25, 2)
        x1, y1 = rng.integers(38, 60, 2)
        draw = ImageDraw.Draw(image)
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        (draw.ellipse if i % 2 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        return image

    if name == "CIFAR-10":
        test = DATA / "cifar10" / "test"
        files = [f for label in sorted(test.iterdir()) for f in sorted(label.iterdir())[: SETS // 10]]
        unseen = np.stack([load_image(f, size, channels).pixels for f in files])
    elif name == "Fashion-MNIST":
        unseen = np.stack([pixels(Image.fromarray(d)) for d in _idx_images("fashion-mnist", "t10k", SETS)])
    else:
        held = {(p.parent.name, p.name) for p in DEMO.rglob("*.jpg")}
        files = sorted(p for p in (DATA / "caltech101").rglob("*.jpg") if (p.parent.name, p.name) not in held)
        np.random.default_rng(1).shuffle(files)  # type: ignore[arg-type]
        unseen = np.stack([load_image(f, size, channels).pixels for f in files[:SETS]])
    sets = {"unseen in-domain": unseen,
            "MNIST": np.stack([pixels(Image.fromarray(d)) for d in _idx_images("mnist", "t10k", SETS)])}
    if name != "Fashion-MNIST":  # grey clothes against shapes in colour says nothing new
        sets["shapes"] = np.stack([pixels(make_image(s)) for s in range(SETS)])
        sets["plain background"] = np.stack([pixels(plain(i)) for i in range(SETS)])
    return sets


def measure(index: Path, name: str) -> dict[str, dict[str, float]]:
    """rule -> query set -> share flagged, on one collection, through the serving path."""
    from indexer.collection import Collection

    collection = Collection.open(index)
    encoder = collection.encoder
    indexed = np.asarray(collection.calibration["error_quantiles"])
    old_limit = float(np.interp(99.0, np.linspace(0, 100, len(indexed)), indexed))
    rows: dict[str, dict[str, float]] = {"either signal (the product)": {}, "reconstruction for its complexity": {},
                                         "code far from the collection's": {},
                                         "before: error above the indexed images' 99th percentile": {}}
    for set_name, pixels in _query_sets(name, encoder.image_size, encoder.channels).items():
        _, errors, latents = encoder.encode_for_query(pixels)
        judged = encoder.judge(pixels, errors, latents)
        assert judged is not None, "the collection's model predates encoder.novelty: rebuild with --retrain"
        rows["either signal (the product)"][set_name] = float(np.mean([bool(j["fired"]) for j in judged]))
        rows["reconstruction for its complexity"][set_name] = float(np.mean(["reconstruction" in j["fired"]
                                                                            for j in judged]))
        rows["code far from the collection's"][set_name] = float(np.mean(["code" in j["fired"] for j in judged]))
        rows["before: error above the indexed images' 99th percentile"][set_name] = float(np.mean(errors > old_limit))
    novelty = encoder.novelty
    rows["calibration"] = {"held-out images": float(novelty.calibration_images if novelty else 0)}
    collection.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lookalike-novelty"),
                        help="where the three collections are built (kept for the next run)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    needed = ("cifar10", "mnist", "fashion-mnist", "caltech101")
    if not all((DATA / d).is_dir() for d in needed):
        print(f"skipped: {DATA} lacks one of {', '.join(needed)}")
        return 0
    results = {name: measure(index, name) for name, (_, index) in build_collections(args.work).items()}
    lines = []
    for name, rows in results.items():
        sets = list(rows["either signal (the product)"])
        held = int(rows.pop("calibration")["held-out images"])
        lines += [f"**{name}** (calibrated on {held} held-out images)", "",
                  "| Rule | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
        lines += [f"| {rule} | " + " | ".join(f"{rates[s]:.3f}" for s in sets) + " |" for rule, rates in rows.items()]
        lines.append("")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "novelty.json").write_text(json.dumps(results, indent=2))
    (args.out / "novelty.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
