"""The saved vector index plus the writes made since it was built, searchable while they happen.

The saved index may be memory-mapped and read-only (IVF), and rebuilding it per write would cost seconds at a
million images, so writes go beside it, the way log-structured stores do: added codes into a small exact index,
the ids of saved codes removed or replaced into a set that filters the saved index's results. A search merges the
two by distance. The catalogue holds every write durably; the next build (or server start) folds them into a fresh
saved index.
"""
from __future__ import annotations

import threading

import numpy as np

from indexer.vectors import VectorIndex, use_search_threads


class LiveVectors:
    """Thread-safe search over a saved VectorIndex with additions and removals applied on top."""

    def __init__(self, base: VectorIndex):
        import faiss

        self.base = base
        self.meta = base.meta
        self.generation = base.generation
        self._added = faiss.IndexIDMap2(faiss.IndexFlatL2(base.dimension))
        # Ids whose copy in the saved index is out of date (removed, or added again with a new code). The count
        # subtracts this set's size and every search over-fetches by it, so only ids the saved index holds go in
        # (VectorIndex.holds says which: an image added over HTTP has a new id, never one of them).
        self._removed: set[int] = set()
        self._lock = threading.Lock()  # faiss indexes are not safe to search while another thread adds to them

    @property
    def kind(self) -> str:
        """The saved index's kind: 'exact' or 'ivf-flat'."""
        return self.base.kind

    @property
    def dimension(self) -> int:
        """Code size."""
        return self.base.dimension

    def __len__(self) -> int:
        # An id both hidden in the saved index and added again is counted once, by the overlay.
        with self._lock:
            return len(self.base) - len(self._removed) + self._added.ntotal

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Make (n,) `ids` with (n, d) `codes` searchable; an id added again replaces its code."""
        ids = np.asarray(ids, np.int64)
        codes = np.ascontiguousarray(codes, np.float32).reshape(len(ids), self.dimension)
        with self._lock:
            self._added.remove_ids(ids)  # type: ignore[arg-type]  # faiss takes an id array too
            self._added.add_with_ids(codes, ids)
            # A re-added id that the saved index holds with an older code: hide that copy.
            self._removed.update(ids[self.base.holds(ids)].tolist())

    def remove(self, ids: list[int] | np.ndarray) -> None:
        """Stop returning `ids`; ids that are nowhere are ignored."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        with self._lock:
            self._added.remove_ids(ids)  # type: ignore[arg-type]  # faiss takes an id array too
            self._removed.update(ids[self.base.holds(ids)].tolist())

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest `k` per query row over the saved index and the writes: (D, I), Euclidean, ascending, -1 pads."""
        use_search_threads()  # the overlay's own FAISS search below runs in this thread too
        xq = np.ascontiguousarray(xq, np.float32).reshape(-1, self.dimension)  # (m, d)
        with self._lock:
            removed = frozenset(self._removed)
            if self._added.ntotal:
                squared, added_ids = self._added.search(xq, min(k, self._added.ntotal))  # (m, k') each
                added = (np.sqrt(np.maximum(squared, 0.0)), added_ids)
            else:
                added = None
        if not removed and added is None:
            return self.base.search(xq, k)
        # Ask the saved index for enough that k survive the removals.
        base_d, base_i = self.base.search(xq, k + len(removed))  # (m, k + r)
        out_d = np.full((len(xq), k), np.inf, np.float32)
        out_i = np.full((len(xq), k), -1, np.int64)
        for row in range(len(xq)):
            pairs = [(d, i) for d, i in zip(base_d[row], base_i[row]) if i >= 0 and int(i) not in removed]
            if added is not None:
                pairs += [(d, i) for d, i in zip(added[0][row], added[1][row]) if i >= 0]
            pairs.sort(key=lambda p: p[0])
            for j, (d, i) in enumerate(pairs[:k]):
                out_d[row, j], out_i[row, j] = d, i
        return out_d, out_i
