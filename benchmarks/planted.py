"""Edited copies planted in a copy of a photo folder: the ground truth of the near-duplicate acceptance test.

A share of the photos each get one edited copy, written under `planted/` beside the others: always re-encoded as a
JPEG of quality 30-95, and, each with probability one half, resized to 50-150%, cropped by 5-10% of each side,
brightened or darkened by up to 15%, and given a small text watermark. The crop is taken after the resize, so it is
a share of the picture the copy really has. The folder's other photos stay as they are: many are genuinely
similar but distinct (Caltech-101's motorbikes, faces and brain scans), which is what a duplicate finder must not
group.
"""
from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

PLANTED_DIR = "planted"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


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
