"""Edited copies planted in a copy of a photo folder: the ground truth of the near-duplicate test and benchmark.

    python benchmarks/planted.py [--seeds 0 1 2] [--work DIR]   # ~3 min a seed on 2 cores

For each seed: plants copies of 5% of the demo photos (`data/images`), builds the collection with the defaults,
and measures `indexer duplicates` at its suggested threshold (pixel check, and codes alone) beside the perceptual
hash baseline (imagehash's 64-bit pHash, groups of pairs within a Hamming distance, at the distance that does
best on the planted truth: the baseline gets the benefit of hindsight). Writes results/planted.json and .md.

A share of the photos each get one edited copy, written under `planted/` beside the others: always re-encoded as a
JPEG of quality 30-95, and, each with probability one half, resized to 50-150%, cropped by 5-10% of each side,
brightened or darkened by up to 15%, and given a small text watermark. The crop is taken after the resize, so it is
a share of the picture the copy really has. The folder's other photos stay as they are: many are genuinely
similar but distinct (Caltech-101's motorbikes, faces and brain scans), which is what a duplicate finder must not
group.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "images"
RESULTS = REPO / "benchmarks" / "results"
PLANTED_DIR = "planted"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


# The demo folder's own near-identical photos (Caltech-101 holds some pictures twice), checked by eye: the same
# picture re-saved, re-cropped, recoloured or framed. Grouping them is right; any other group is false.
DEMO_OWN_DUPLICATES = frozenset(frozenset(pair) for pair in [
    ("llama/image_0001.jpg", "llama/image_0010.jpg"),
    ("grand_piano/image_0006.jpg", "grand_piano/image_0014.jpg"),
    ("buddha/image_0022.jpg", "buddha/image_0028.jpg"),
    ("buddha/image_0012.jpg", "buddha/image_0013.jpg"),
    ("buddha/image_0008.jpg", "buddha/image_0040.jpg"),  # the same drawing, recoloured
    ("lotus/image_0006.jpg", "lotus/image_0015.jpg"),
    ("lotus/image_0023.jpg", "lotus/image_0033.jpg"),
    ("stop_sign/image_0001.jpg", "stop_sign/image_0005.jpg"),
    ("stop_sign/image_0022.jpg", "stop_sign/image_0034.jpg"),  # the same sign, one on a grey border
    ("stop_sign/image_0001.jpg", "stop_sign/image_0034.jpg"),  # ... and the same drawing as 1 and 5
    ("stop_sign/image_0001.jpg", "stop_sign/image_0022.jpg"),
    ("stop_sign/image_0005.jpg", "stop_sign/image_0022.jpg"),
    ("stop_sign/image_0005.jpg", "stop_sign/image_0034.jpg"),
    ("butterfly/image_0001.jpg", "butterfly/image_0031.jpg"),  # a screenshot of the other
])


@dataclass(frozen=True)
class Planted:
    """One planted copy: its path and its original's, relative to the collection's folder, and what was done."""

    copy: str
    original: str
    edits: tuple[str, ...]


def photos_in(folder: Path) -> list[Path]:
    """Every image file under `folder`, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def watermark(im: Image.Image, text: str = "(c) lookalike 2026") -> Image.Image:
    """`im` with `text` in half-transparent white across its lower right, about 6% of the picture high."""
    base = im.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    size = max(8, base.height // 16)
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = max(0, base.width - (right - left) - base.width // 20)
    y = max(0, base.height - (bottom - top) - base.height // 12)
    draw.text((x, y), text, font=font, fill=(255, 255, 255, 150), stroke_width=1, stroke_fill=(0, 0, 0, 90))
    return Image.alpha_composite(base, layer).convert("RGB")


def edited_copy(im: Image.Image, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """One planted copy of `im` as JPEG bytes, and the names of the edits it got."""
    im = im.convert("RGB")
    done = []
    if rng.random() < 0.5:
        scale = rng.uniform(0.5, 1.5)
        im = im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))), Image.Resampling.LANCZOS)
        done.append(f"resize {scale:.2f}")
    if rng.random() < 0.5:
        # After the resize: the crop is a share of the picture this copy has, never past its edge.
        left, top, right, bottom = rng.uniform(0.05, 0.10, 4)
        box = (round(im.width * left), round(im.height * top),
               round(im.width * (1 - right)), round(im.height * (1 - bottom)))
        im = im.crop(box)
        done.append(f"crop {left:.2f} {top:.2f} {right:.2f} {bottom:.2f}")
    if rng.random() < 0.5:
        factor = 1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.15)
        im = ImageEnhance.Brightness(im).enhance(factor)
        done.append(f"brightness {factor:.2f}")
    if rng.random() < 0.5:
        im = watermark(im)
        done.append("watermark")
    quality = int(rng.integers(30, 96))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    done.append(f"jpeg {quality}")
    return out.getvalue(), tuple(done)


def plant_copies(source: Path, target: Path, share: float = 0.05, seed: int = 0) -> list[Planted]:
    """Copy the photos of `source` to `target` and plant an edited copy of `share` of them; the planted pairs."""
    source, target = Path(source), Path(target)
    shutil.copytree(source, target, dirs_exist_ok=True)
    photos = photos_in(source)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(photos), max(1, round(share * len(photos))), replace=False).tolist())
    (target / PLANTED_DIR).mkdir(exist_ok=True)
    planted = []
    for number, row in enumerate(chosen):
        original = photos[row].relative_to(source)
        with Image.open(photos[row]) as im:
            data, edits = edited_copy(im, rng)
        name = f"{PLANTED_DIR}/{number:04d}_{original.stem}.jpg"
        (target / name).write_bytes(data)
        planted.append(Planted(name, original.as_posix(), edits))
    return planted


def score_groups(groups: list[list[str]], planted: list[Planted],
                 known_pairs: frozenset[frozenset[str]] = frozenset()) -> dict:
    """Recall of the planted pairs and the share of false groups, for groups given as lists of relative paths.

    A planted pair is found when its copy and original share a group. A group is true when every member is tied to
    another member by a planted pair or one of `known_pairs` (the folder's own near-identical photos, checked by
    eye); otherwise it is false.
    """
    true_pairs = {frozenset((p.copy, p.original)) for p in planted} | set(known_pairs)
    # A copy of a photo that has near-identical twins is a copy of the twins as well.
    for p in planted:
        true_pairs |= {frozenset((p.copy, other)) for pair in known_pairs if p.original in pair
                       for other in pair - {p.original}}
    group_of = {path: number for number, members in enumerate(groups) for path in members}
    found = sum(1 for p in planted if p.copy in group_of and group_of.get(p.copy) == group_of.get(p.original))
    false = []
    for members in groups:
        tied = {a for a in members for b in members if a != b and frozenset((a, b)) in true_pairs}
        if tied != set(members):
            false.append(members)
    return {"planted": len(planted), "found": found, "recall": found / max(1, len(planted)),
            "groups": len(groups), "false_groups": len(false), "false_share": len(false) / max(1, len(groups)),
            "false": false}


def phash_groups(folder: Path, paths: list[str], planted: list[Planted],
                 known_pairs: frozenset[frozenset[str]]) -> dict:
    """The perceptual-hash baseline: connected components of the pairs within a Hamming distance, at the distance
    (0-20) where recall minus false share is largest."""
    import imagehash
    from PIL import Image

    from indexer.duplicates import _components

    hashes = []
    for path in paths:
        with Image.open(folder / path) as im:
            hashes.append(np.asarray(imagehash.phash(im).hash, bool).ravel())
    bits = np.stack(hashes).astype(np.int16)  # (n, 64)
    hamming = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)  # (n, n): all pairs, fine at a few thousand
    best: dict = {}
    for limit in range(21):
        rows, cols = np.nonzero(np.triu(hamming <= limit, 1))
        groups = [[paths[i] for i in sorted(c)] for c in _components(zip(rows.tolist(), cols.tolist()))]
        score = score_groups(groups, planted, known_pairs)
        if not best or score["recall"] - score["false_share"] > best["recall"] - best["false_share"]:
            best = {**score, "hamming": limit}
    return best


def measure(seed: int, work: Path, share: float) -> dict:
    """Plant, build with the defaults, and measure the duplicate finder and the baseline for one seed."""
    from indexer.__main__ import main as indexer
    from indexer.collection import Collection
    from indexer.explore import duplicates_report

    folder, index = work / f"seed{seed}" / "images", work / f"seed{seed}" / "index"
    truth_file = work / f"seed{seed}" / "planted.json"
    if not truth_file.exists():
        shutil.rmtree(work / f"seed{seed}", ignore_errors=True)
        planted = plant_copies(DEMO, folder, share, seed)
        started = time.perf_counter()
        if indexer(["build", str(folder), "--index", str(index), "-q"]) != 0:
            raise RuntimeError(f"indexer build failed on {folder}")
        build_seconds = time.perf_counter() - started
        truth_file.write_text(json.dumps({"planted": [asdict(p) for p in planted], "build_seconds": build_seconds}))
    saved = json.loads(truth_file.read_text())
    planted = [Planted(p["copy"], p["original"], tuple(p["edits"])) for p in saved["planted"]]
    row: dict = {"seed": seed, "images": len(photos_in(folder)), "planted": len(planted),
                 "build_seconds": round(saved["build_seconds"], 1)}
    for check in ("pixels", "none"):
        collection = Collection.open(index)  # opened afresh: nothing measured by the other check is reused
        try:
            started = time.perf_counter()
            report = duplicates_report(collection, None, check=check)
            seconds = time.perf_counter() - started
        finally:
            collection.close()
        groups = [[m["path"] for m in g["members"]] for g in report["groups"]]
        score = score_groups(groups, planted, DEMO_OWN_DUPLICATES)
        row[check] = {"recall": score["recall"], "false_share": score["false_share"], "groups": score["groups"],
                      "false_groups": score["false"], "seconds": round(seconds, 2),
                      "pairs_checked": report.get("pairs_checked", 0), "threshold": report["threshold"]}
    started = time.perf_counter()
    paths = [p.relative_to(folder).as_posix() for p in photos_in(folder)]
    baseline = phash_groups(folder, paths, planted, DEMO_OWN_DUPLICATES)
    row["phash"] = {"recall": baseline["recall"], "false_share": baseline["false_share"], "groups": baseline["groups"],
                    "false_groups": baseline["false"], "hamming": baseline["hamming"],
                    "seconds": round(time.perf_counter() - started, 2)}
    return row


def cost(index: Path) -> dict:
    """Where the default's time goes on one collection, and what that makes of 100,000 and 1,000,000 images: the
    pixel check grows with the candidate pairs (about a quarter of a pair per image here), the rest with n or
    less (benchmarks/duplicates.py measures the neighbour graph at those sizes)."""
    from indexer.collection import Collection
    from indexer.duplicates import code_limit
    from indexer.pixelcheck import PairScores

    collection = Collection.open(index)
    try:
        timings: dict = {}
        started = time.perf_counter()
        graph, _ = collection.graph()
        timings["graph_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        copies = collection.copy_distances()
        timings["copy_distances_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        pairs = collection._candidates(graph, code_limit(graph.nearest, copies))  # as Collection.duplicates makes them
        timings["candidates_seconds"] = time.perf_counter() - started
        files = collection._pair_scores({i for pair in pairs for i in pair})
        scores = PairScores(files.files, files.digests)  # afresh: nothing measured before is reused
        started = time.perf_counter()
        scores.measure(pairs)
        timings["pixel_check_seconds"] = time.perf_counter() - started
    finally:
        collection.close()
    n = len(graph.ids)
    per_image = len(pairs) / n
    per_pair = timings["pixel_check_seconds"] / max(1, len(pairs))
    per_row = timings["candidates_seconds"] / n
    return {"images": n, "pairs": len(pairs), "pairs_per_image": round(per_image, 3),
            "pairs_per_second": round(1 / per_pair, 1), **{k: round(v, 2) for k, v in timings.items()},
            "estimate_seconds": {str(size): round(size * (per_image * per_pair + per_row))
                                 for size in (100_000, 1_000_000)}}


def table(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = ["| Seed | Images | Method | Planted pairs found | Groups | False groups | Seconds |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    names = {"pixels": "lookalike, suggested threshold + pixel check (default)",
             "none": "lookalike, codes alone (`--check none`)", "phash": "pHash, best Hamming distance in hindsight"}
    for row in rows:
        for method, name in names.items():
            r = row[method]
            extra = f" (≤ {r['hamming']} bits)" if method == "phash" else ""
            found = f"{round(r['recall'] * row['planted'])}/{row['planted']} ({r['recall']:.1%})"
            lines.append(f"| {row['seed']} | {row['images']:,} | {name}{extra} | {found} | {r['groups']} | "
                         f"{len(r['false_groups'])} ({r['false_share']:.1%}) | {r['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--share", type=float, default=0.05, help="share of the photos given a planted copy")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lookalike-planted"), help="kept between runs")
    args = parser.parse_args(argv)
    rows = [measure(seed, args.work, args.share) for seed in args.seeds]
    spent = cost(args.work / f"seed{args.seeds[0]}" / "index")
    text = table(rows) + "\n\n" + (
        f"Seed {args.seeds[0]}, the default's parts: neighbour graph {spent['graph_seconds']} s, edited copies' codes "
        f"{spent['copy_distances_seconds']} s, candidates {spent['candidates_seconds']} s, pixel check "
        f"{spent['pixel_check_seconds']} s ({spent['pairs']} pairs, {spent['pairs_per_image']} an image, "
        f"{spent['pairs_per_second']} pairs/s). Candidates and pixel check at the same rates: "
        f"{spent['estimate_seconds']['100000']:,} s for 100,000 images, "
        f"{spent['estimate_seconds']['1000000']:,} s for 1,000,000.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "planted.json").write_text(json.dumps({"seeds": rows, "cost": spent}, indent=2))
    (RESULTS / "planted.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
