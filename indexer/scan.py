"""Walk an image folder: supported image files only, no symlink escapes, size and mtime for change detection."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from encoder.preprocess import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileEntry:
    """One file under the root: its POSIX path relative to the root, size in bytes and mtime in ns."""

    relpath: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    """Image files found, and files passed over with the reason (not an image type, link escaping the root)."""

    images: list[FileEntry]
    passed_over: list[tuple[str, str]]


def scan(root: str | os.PathLike, exclude: str | os.PathLike | None = None) -> ScanResult:
    """Recursively list image files under `root`, sorted by path; hidden entries and `exclude` are skipped."""
    root = Path(root).resolve()
    excluded = Path(exclude).resolve() if exclude else None
    images: list[FileEntry] = []
    passed_over: list[tuple[str, str]] = []
    for entry in _walk(root, root, excluded, passed_over):
        rel = Path(entry.path).relative_to(root).as_posix()
        if Path(entry.name).suffix.lower() not in IMAGE_EXTENSIONS:
            passed_over.append((rel, f"not a supported image type ({Path(entry.name).suffix or 'no extension'})"))
            continue
        try:
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:
            passed_over.append((rel, f"cannot stat: {exc.strerror}"))
            continue
        images.append(FileEntry(rel, st.st_size, st.st_mtime_ns))
    images.sort(key=lambda e: e.relpath)
    return ScanResult(images, sorted(passed_over))


def _walk(root: Path, directory: Path, excluded: Path | None, passed_over: list) -> Iterator[os.DirEntry]:
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        log.warning("cannot read %s: %s", directory, exc.strerror)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden files and folders: .git, .DS_Store, editors' temp files
        path = Path(entry.path)
        if entry.is_symlink():
            # A link is followed only when its target stays inside the root: no escapes to /etc.
            target = path.resolve()
            if not target.is_relative_to(root):
                passed_over.append((path.relative_to(root).as_posix(), "symbolic link leads outside the folder"))
                continue
        if entry.is_dir(follow_symlinks=not entry.is_symlink()):
            if excluded is not None and path.resolve() == excluded:
                continue
            yield from _walk(root, path, excluded, passed_over)
        elif entry.is_file():
            yield entry
