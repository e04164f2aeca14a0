"""CLI: python -m indexer build|train|info|search|evaluate."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from encoder.options import TrainConfig, flag_fields, flag_help, whole_number
from encoder.store import ModelError
from indexer import explore, settings
from indexer.settings import argument_type

BY_KEY = {s.key: s for s in settings.SETTINGS}
EXPLORE_COMMANDS = {"duplicates": explore.cmd_duplicates, "outliers": explore.cmd_outliers, "map": explore.cmd_map}
# Flags that BuildOptions has fields of its own for; every other training flag goes into BuildOptions.training.
BUILD_FIELDS = ("image_size", "code_size", "steps", "epochs", "time_budget", "variant")

log = logging.getLogger("indexer")


def _setting_defaults() -> dict[str, Any]:
    """The indexer's settings from the environment; a malformed value is a one-line error, exit status 2."""
    try:
        return settings.from_environment(settings.SETTINGS)
    except ValueError as why:
        print(f"error: {why}", file=sys.stderr)
        raise SystemExit(2) from None


def _add_setting(p: argparse.ArgumentParser, setting: settings.Setting, value: Any, metavar: str = "N") -> None:
    assert setting.flag, setting.key  # only settings with a flag are added
    shown = repr(setting.default) if isinstance(setting.default, str) else "all" if setting.default is None \
        else setting.default
    p.add_argument(setting.flag, dest=setting.key.lower(), type=argument_type(setting.parse, setting.key.lower()),
                   default=value, metavar=metavar, help=f"{setting.help} ({setting.env}, default {shown})")


def _parser(prog: str = "python -m indexer") -> argparse.ArgumentParser:
    env = _setting_defaults()
    parser = argparse.ArgumentParser(prog=prog, description="Index image folders for lookalike.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    # The same flags after the sub-command; SUPPRESS keeps them from resetting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars, warnings only")
    parser.set_defaults(runtime=env["RUNTIME"])  # environment only: every command that encodes uses it
    sub = parser.add_subparsers(dest="command", required=True)

    def index_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--index", required=True, type=Path, help="collection folder (model, catalogue, vectors)")

    def training_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of images, searched recursively")
        index_arg(p)
        for f in flag_fields(TrainConfig):
            choices = f.metadata["choices"]
            metavar = f.metadata["metavar"] or (None if choices else "N" if f.type == "int" else "X")
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, choices=choices, metavar=metavar,
                           type=str if choices else argument_type(f.metadata["parse"], f.name),
                           help=flag_help(f))  # default None: "the default, or what the model already has"
        _add_setting(p, BY_KEY["MAX_TRAIN_IMAGES"], env["MAX_TRAIN_IMAGES"])
        _add_setting(p, BY_KEY["WORKERS"], env["WORKERS"])

    build = sub.add_parser("build", parents=[common],
                           help="train an encoder if needed, then index new and changed images")
    training_args(build)
    build.add_argument("--retrain", action="store_true", help="train a new encoder and re-encode everything")
    _add_setting(build, BY_KEY["COMMIT_BATCH"], env["COMMIT_BATCH"])
    _add_setting(build, BY_KEY["ENGINE"], env["ENGINE"], "{local,ray}")
    _add_setting(build, BY_KEY["RAY_ADDRESS"], env["RAY_ADDRESS"], "ADDRESS")
    _add_setting(build, BY_KEY["RAY_ENCODERS"], env["RAY_ENCODERS"])
    _add_setting(build, BY_KEY["ERROR_SAMPLE"], env["ERROR_SAMPLE"], "{all,N}")
    train = sub.add_parser("train", parents=[common],
                           help="(re)train the encoder only; the next build re-encodes everything")
    training_args(train)
    info = sub.add_parser("info", parents=[common], help="JSON summary of a collection")
    index_arg(info)
    search = sub.add_parser("search", parents=[common], help="nearest neighbours of an image, without a server")
    index_arg(search)
    search.add_argument("query", type=Path, metavar="QUERY_IMAGE")
    search.add_argument("-k", type=argument_type(whole_number(1), "k"), default=10, help="how many results (10)")
    evaluate = sub.add_parser("evaluate", parents=[common],
                              help="precision@k and mAP@100 of a collection whose sub-folders are its labels")
    index_arg(evaluate)
    evaluate.add_argument("-k", type=argument_type(whole_number(1), "k"), default=10,
                          help="neighbours scored for precision@k (10)")
    evaluate.add_argument("--metric", choices=("l2", "cosine"), default="l2",
                          help="code distance: l2 is what search ranks by (l2)")
    explore.add_parsers(sub, common, index_arg, argument_type, whole_number)
    return parser


def _options(args: argparse.Namespace):
    from indexer.build import BuildOptions

    given = {f.name: getattr(args, f.name) for f in flag_fields(TrainConfig) if getattr(args, f.name) is not None}
    training = {k: v for k, v in given.items() if k not in BUILD_FIELDS}
    chosen: dict[str, Any] = {k: given.get(k) for k in BUILD_FIELDS}
    return BuildOptions(**chosen, training=training,
                        retrain=getattr(args, "retrain", False), max_train_images=args.max_train_images,
                        workers=args.workers, progress=not args.quiet,
                        commit_every=getattr(args, "commit_batch", settings.DEFAULTS["COMMIT_BATCH"]),
                        **{k: getattr(args, k, settings.DEFAULTS[k.upper()])
                           for k in ("engine", "ray_address", "ray_encoders", "error_sample")})


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


def main(argv: list[str] | None = None, prog: str = "python -m indexer") -> int:
    """Entry point; returns the exit status. `prog` names the command in usage lines (`lookalike` passes its own)."""
    args = _parser(prog).parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build loaded is not news
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is noise to users
    from encoder.preprocess import ImageError
    from encoder.runtime import configure_runtime
    from indexer.build import BuildError

    configure_runtime(args.runtime)  # every command that encodes loads the encoder after this
    from indexer.evaluate import EvaluationError

    try:
        if args.command in ("build", "train"):
            return cmd_build(args, train_only=args.command == "train")
        if args.command == "info":
            return cmd_info(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command in EXPLORE_COMMANDS:
            return EXPLORE_COMMANDS[args.command](args)
        return cmd_search(args)
    except (BuildError, ModelError, ImageError, EvaluationError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished batches are kept; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
