"""Walking a folder: recursion, hidden files, non-images, symlinks that escape."""
from __future__ import annotations

import os

from indexer.scan import scan
from tests.support import write_images


def test_scan_recurses_filters_and_reports(tmp_path):
    root = tmp_path / "root"
    write_images(root, 2, sub="a/b")
    write_images(root, 1, ext=".PNG")
    (root / ".hidden").mkdir()
    write_images(root / ".hidden", 1)
    (root / "notes.txt").write_text("x")
    outside = tmp_path / "outside.jpg"
    write_images(tmp_path, 1)[0].rename(outside)
    os.symlink(outside, root / "escape.jpg")
    os.symlink(root / "a" / "b" / "img_0000.jpg", root / "inside.jpg")
    index_dir = root / "my-index"
    write_images(index_dir, 1)

    found = scan(root, exclude=index_dir)
    assert [e.relpath for e in found.images] == ["a/b/img_0000.jpg", "a/b/img_0001.jpg", "img_0000.PNG", "inside.jpg"]
    assert all(e.size > 0 and e.mtime_ns > 0 for e in found.images)
    reasons = dict(found.passed_over)
    assert reasons["notes.txt"].startswith("not a supported image type")
    assert "outside" in reasons["escape.jpg"]


def test_scan_finds_phone_and_netpbm_files_by_extension(tmp_path):
    names = ["a.heic", "b.HEIF", "c.hif", "d.avif", "e.pgm", "f.ppm", "g.pbm", "h.pnm"]
    for name in names + ["raw.dng", "float.pfm"]:  # DNG and PFM are not read
        (tmp_path / name).write_bytes(b"x")
    found = scan(tmp_path)
    assert [e.relpath for e in found.images] == names
    assert sorted(path for path, _ in found.passed_over) == ["float.pfm", "raw.dng"]
