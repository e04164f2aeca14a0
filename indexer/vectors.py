"""The FAISS index derived from the catalogue: build, search, save atomically with its generation, load."""
from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np

from encoder.store import atomic_write_bytes

log = logging.getLogger(__name__)

VECTORS_FILE = "vectors.faiss"
# File layout: MAGIC, then generation and count as little-endian uint64, then faiss.serialize_index bytes.
MAGIC = b"LOOKALIKE-VECTORS-1\n"
HEADER = struct.Struct("<QQ")


class VectorsStale(Exception):
    """The vectors file is missing, unreadable, or was built from another catalogue generation."""


class VectorIndex:
    """Exact L2 search over (n, d) float32 codes with our int64 catalogue ids (xb/xq/k, results (D, I))."""

    def __init__(self, index, generation: int):
        self.index = index
        self.generation = generation

    @classmethod
    def build(cls, ids: np.ndarray, codes: np.ndarray, generation: int) -> "VectorIndex":
        """A new index over `codes` (n, d) float32 labelled with `ids` (n,) int64."""
        import faiss

        codes = np.ascontiguousarray(codes, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if codes.ndim != 2 or len(ids) != len(codes):
            raise ValueError(f"codes {codes.shape} and ids {ids.shape} do not match")
        index = faiss.IndexIDMap2(faiss.IndexFlatL2(codes.shape[1]))
        if len(ids):
            index.add_with_ids(codes, ids)
        return cls(index, generation)

    @property
    def dimension(self) -> int:
        """Code size."""
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest `k` for each query row: (D, I), D Euclidean distances ascending, I ids (-1 pads)."""
        xq = np.ascontiguousarray(xq, dtype=np.float32).reshape(-1, self.dimension)
        k = max(1, min(int(k), len(self))) if len(self) else 1
        squared, ids = self.index.search(xq, k)
        return np.sqrt(np.maximum(squared, 0.0)), ids

    def save(self, index_dir: str | os.PathLike) -> None:
        """Write atomically (temp file, fsync, rename): a crash leaves the previous file intact."""
        import faiss

        payload = faiss.serialize_index(self.index)  # uint8 numpy array
        atomic_write_bytes(Path(index_dir) / VECTORS_FILE,
                           MAGIC + HEADER.pack(self.generation, len(self)) + payload.tobytes())

    @classmethod
    def load(cls, index_dir: str | os.PathLike, expected_generation: int) -> "VectorIndex":
        """Read the file; raise VectorsStale when it is missing, corrupt or not from `expected_generation`."""
        import faiss

        path = Path(index_dir) / VECTORS_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise VectorsStale(f"{path} does not exist") from None
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + HEADER.size:
            raise VectorsStale(f"{path} is not a lookalike vectors file")
        generation, count = HEADER.unpack_from(data, len(MAGIC))
        if generation != expected_generation:
            raise VectorsStale(f"{path} is from generation {generation}, the catalogue is at {expected_generation}")
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8, offset=len(MAGIC) + HEADER.size))
        except RuntimeError as exc:
            raise VectorsStale(f"{path} is corrupt: {exc}") from None
        if index.ntotal != count:
            raise VectorsStale(f"{path} holds {index.ntotal} vectors, its header says {count}")
        return cls(index, generation)
