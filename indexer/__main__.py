"""CLI: python -m indexer build|train|info|search|evaluate."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from encoder.store import ModelError
from encoder.train import AUTO_EPOCHS, TrainConfig
from encoder.variants import DEFAULT_VARIANT, VARIANTS

TRAIN_DEFAULTS = TrainConfig()

log = logging.getLogger("indexer")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indexer", description="Index image folders for lookalike.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    # The same flags after the sub-command; SUPPRESS keeps them from resetting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True)

    def index_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--index", required=True, type=Path, help="collection folder (model, catalogue, vectors)")

    def training_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of images, searched recursively")
        index_arg(p)
        p.add_argument("--steps", type=_positive,
                       help=f"training steps (default: {AUTO_EPOCHS} passes over the images, at least "
                            f"{TRAIN_DEFAULTS.min_steps} and at most {TRAIN_DEFAULTS.max_steps} steps)")
        p.add_argument("--epochs", type=_positive, help="training passes over the images, instead of --steps")
        p.add_argument("--time-budget", type=_non_negative, metavar="SECONDS",
                       help="also stop training after this many seconds (default: no limit, so the model does not "
                            "depend on the machine's speed)")
        p.add_argument("--code-size", type=_positive, help="numbers per image code (30)")
        p.add_argument("--image-size", type=_positive,
                       help=f"side in pixels the model sees ({TRAIN_DEFAULTS.image_size}; smaller images: their own)")
        p.add_argument("--variant", choices=VARIANTS,
                       help=f"autoencoder family member ({DEFAULT_VARIANT}); see the README")
        p.add_argument("--noise-std", type=_fraction, help="denoising: gaussian noise sigma in [0, 1] pixel units (0.15)")
        p.add_argument("--occlusion", type=_fraction, help="denoising: probability of an occlusion box (0)")
        p.add_argument("--salt-pepper", type=_fraction, help="denoising: share of pixels set black or white (0)")
        p.add_argument("--zoom", type=_fraction,
                       help="denoising: up to this share of each side cropped away and resized back (0)")
        p.add_argument("--brightness", type=_fraction, help="denoising: brightness scaled by up to +-this (0)")
        p.add_argument("--whitening", type=_fraction, metavar="POWER",
                       help="search codes: each principal direction scaled by its spread^-POWER before unit length; "
                            f"0 only centres, 1 whitens fully ({TRAIN_DEFAULTS.whitening:g})")
        p.add_argument("--max-train-images", type=_positive, default=10_000,
                       help="train on a random sample of at most this many images (10000)")
        p.add_argument("--workers", type=int, default=int(os.environ.get("LOOKALIKE_WORKERS", 0)),
                       help="decoding processes; 0 = one per core (LOOKALIKE_WORKERS)")

    build = sub.add_parser("build", parents=[common], help="train an encoder if needed, then index new and changed images")
    training_args(build)
    build.add_argument("--retrain", action="store_true", help="train a new encoder and re-encode everything")
    build.add_argument("--batch", type=_positive, default=1024,
                       help="images committed per transaction: the most an interruption can cost (1024)")
    train = sub.add_parser("train", parents=[common], help="(re)train the encoder only; the next build re-encodes everything")
    training_args(train)
    info = sub.add_parser("info", parents=[common], help="JSON summary of a collection")
    index_arg(info)
    search = sub.add_parser("search", parents=[common], help="nearest neighbours of an image, without a server")
    index_arg(search)
    search.add_argument("query", type=Path, metavar="QUERY_IMAGE")
    search.add_argument("-k", type=_positive, default=10, help="how many results (10)")
    evaluate = sub.add_parser("evaluate", parents=[common],
                              help="precision@k and mAP@100 of a collection whose sub-folders are its labels")
    index_arg(evaluate)
    evaluate.add_argument("-k", type=_positive, default=10, help="neighbours scored for precision@k (10)")
    evaluate.add_argument("--metric", choices=("l2", "cosine"), default="l2",
                          help="code distance: l2 is what search ranks by (l2)")
    return parser


def _options(args: argparse.Namespace):
    from indexer.build import BuildOptions

    training = {k: getattr(args, k) for k in ("noise_std", "occlusion", "salt_pepper", "zoom", "brightness", "whitening")
                if getattr(args, k) is not None}
    return BuildOptions(image_size=args.image_size, code_size=args.code_size, steps=args.steps, epochs=args.epochs,
                        time_budget=args.time_budget, variant=args.variant, training=training,
                        retrain=getattr(args, "retrain", False), max_train_images=args.max_train_images,
                        workers=args.workers, progress=not args.quiet, commit_every=getattr(args, "batch", 1024))


def cmd_build(args: argparse.Namespace, train_only: bool = False) -> int:
    from indexer.build import SKIPPED_FILE, build

    report = build(args.images, args.index, _options(args), train_only=train_only)
    summary = report.summary()
    if train_only:
        print(f"trained {summary['model'][:19]} in {summary['seconds']}s; "
              f"run `python -m indexer build {args.images} --index {args.index}` to encode the images", file=sys.stderr)
    else:
        print(f"indexed {report.indexed}, unchanged {report.unchanged}, removed {report.removed}, "
              f"skipped {len(report.skipped)}; {report.images} images in the collection "
              f"({summary['seconds']}s)", file=sys.stderr)
        v = report.vectors
        if v:
            shape = f", {v['nlist']} lists, {v['nprobe']} probed" if v.get("nlist") else ""
            print(f"search index: {v['kind']}{shape}; recall@10 against exact search {v['recall_at_10']}",
                  file=sys.stderr)
        for path, reason in report.skipped[:10]:
            print(f"  skipped {path}: {reason}", file=sys.stderr)
        if len(report.skipped) > 10:
            print(f"  ... and {len(report.skipped) - 10} more, listed in {args.index / SKIPPED_FILE}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from encoder.store import read_info, training_summary
    from indexer.catalog import Catalog

    info = read_info(args.index)
    with Catalog(args.index, readonly=True) as catalog:
        stats = catalog.stats()
        root = catalog.get_meta("root")
    from indexer.build import SKIPPED_FILE

    skipped_file = args.index / SKIPPED_FILE
    # skipped.tsv is the last run's full list (non-image files included), so it is what `info` counts.
    skipped = len(skipped_file.read_text().splitlines()) - 1 if skipped_file.is_file() else 0
    print(json.dumps({
        "index": str(args.index.resolve()),
        "images_root": root,
        **stats,
        "skipped": skipped,
        "model": f"sha256:{info['sha256']}",
        "encoder": {k: info[k] for k in ("variant", "image_size", "channels", "code_size")},
        "training": training_summary(info),
        "vectors": vectors_summary(args.index),
    }, indent=2))
    return 0


def vectors_summary(index_dir: Path) -> dict | None:
    """The search index as the last build chose and measured it (vectors.json), or None before the first build."""
    from indexer.vectors import META_FILE

    try:
        meta = json.loads((index_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    keys = ("kind", "images", "nlist", "nprobe", "recall_at_10", "file_bytes", "build_seconds", "generation")
    return {k: meta[k] for k in keys if k in meta}


def cmd_search(args: argparse.Namespace) -> int:
    from indexer.collection import Collection

    collection = Collection.open(args.index)
    try:
        code, _, sketch = collection.encode_image(args.query)
        hits = collection.neighbours(code, args.k, sketch=sketch)
        model = collection.encoder.model_id
    finally:
        collection.close()
    results = [{"id": h.id, "path": h.path, "distance": round(h.distance, 6), "copy": h.copy} for h in hits]
    print(json.dumps({"results": results, "model": model}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from indexer.evaluate import evaluate_collection

    report = evaluate_collection(args.index, k=args.k, metric=args.metric)
    print(f"precision@{report['k']} {report['precision_at_k']:.4f}, mAP@{report['map_k']} {report['map_at_k']:.4f} "
          f"({report['metric']}) over {report['images_scored']} images in {report['labels']} labels; "
          f"{report['unlabelled']} top-level images without a label left out", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build loaded is not news
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is noise to users
    from encoder.preprocess import ImageError
    from indexer.build import BuildError
    from indexer.evaluate import EvaluationError

    try:
        if args.command in ("build", "train"):
            return cmd_build(args, train_only=args.command == "train")
        if args.command == "info":
            return cmd_info(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        return cmd_search(args)
    except (BuildError, ModelError, ImageError, EvaluationError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished batches are kept; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
