"""The FAISS index derived from the catalogue: chosen by size, tuned for recall, saved atomically, opened mmapped.

Up to `EXACT_LIMIT` codes the index is exact (flat L2): at 30 floats per code a scan of 100k codes takes about a
millisecond. Above it, an inverted-file index (IVF-Flat) the way autofaiss picks one: ~4·√n lists, k-means trained
on a sample, and the smallest `nprobe` whose recall@10 against exact search, measured on codes from the
collection, reaches `TARGET_RECALL`. IVF-Flat keeps the full codes (120 bytes + an 8-byte id per image), so
recall is limited only by the lists probed, and its inverted lists can be memory-mapped, which makes opening a
million-image index nearly free. (HNSW was the alternative: it cannot be memory-mapped, and its graph costs
another ~130 bytes per image.)

On disk: `vectors-<generation>.faiss` (a plain faiss file, so faiss can mmap it) and `vectors.json`, written
last, which names the file and records the generation, the index choice, its measured recall and the largest id
it holds. The JSON is the commit point: a crash between the two writes leaves the previous pair in force.

Which ids an index holds: an exact index knows (its id map). An IVF index scatters them over its lists, so it
answers by its largest id instead: catalogue ids are AUTOINCREMENT, so an id above it was handed out after the
build and is never in the index, and one at or below it that the catalogue still has was in the catalogue when the
index was built from it.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from encoder.store import atomic_write_bytes

log = logging.getLogger(__name__)

META_FILE = "vectors.json"
FORMAT = 2
EXACT_LIMIT = 100_000  # codes searched exactly; above this, IVF
TARGET_RECALL = 0.99  # recall@10 the nprobe tuning aims for (a margin over the 0.98 we promise)
TUNING_QUERIES = 1_000  # codes from the collection used to measure recall
TRAIN_PER_LIST = 64  # k-means training points per inverted list (faiss advises 30 to 256)


_threads: int | None = None  # what set_threads asked for; None: OpenMP's own default
_configured = threading.local()  # .threads: what this thread last told OpenMP


def set_threads(threads: int) -> None:
    """FAISS's OpenMP threads for every search in this process, whichever thread runs it (0: one per core)."""
    global _threads
    _threads = threads or os.cpu_count() or 1
    use_search_threads()


def use_search_threads() -> None:
    """Give this thread's FAISS searches the count set_threads chose (a no-op once done, or if it was never called)."""
    # OpenMP keeps its thread count per calling thread, and a new thread starts from the default (every core):
    # set in the main thread only, the server's request threads would each search with all cores, spinning
    # against each other. So each thread applies the setting before its first search.
    if _threads is not None and getattr(_configured, "threads", None) != _threads:
        import faiss

        faiss.omp_set_num_threads(_threads)
        _configured.threads = _threads


def saved_generation(index_dir: str | os.PathLike) -> int | None:
    """The catalogue generation of the vectors saved in `index_dir` (what the last build published), or None."""
    try:
        meta = json.loads((Path(index_dir) / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    generation = meta.get("generation") if isinstance(meta, dict) else None
    return generation if isinstance(generation, int) else None


class VectorsStale(Exception):
    """The vectors file is missing, unreadable, or was built from another catalogue generation."""


def ivf_lists(n: int) -> int:
    """Inverted lists for `n` codes: the power of two at or below 4·√n (autofaiss's rule of thumb, rounded down).

    Down, not to the nearest: at 10M codes 8,192 lists train and assign in 59 s where 16,384 take 138 s, at the same
    recall and faster searches (benchmarks/ivf_lists.py); a 30-number code is cheap to scan, lists are not to train.
    """
    return int(2 ** np.floor(np.log2(max(4 * np.sqrt(n), 1))))


def _largest_id(index) -> int:
    """The largest id in a faiss index with our ids, from an exact one's id map or an IVF index's lists (-1: empty)."""
    import faiss

    if not index.ntotal:
        return -1
    if hasattr(index, "id_map"):
        return int(faiss.vector_to_array(index.id_map).max())
    lists = faiss.extract_index_ivf(index).invlists
    assert lists is not None  # an IVF index always has its lists
    largest = -1
    for number in range(lists.nlist):
        size = lists.list_size(number)
        if size:
            ids = lists.get_ids(number)
            largest = max(largest, int(faiss.rev_swig_ptr(ids, size).max()))
            lists.release_ids(number, ids)  # type: ignore[attr-defined]  # in faiss, absent from its stubs
    return largest


def _exact_neighbours(codes: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Squared distance to each query's k-th exact neighbour (m,), the bar an approximate hit must clear."""
    import faiss

    flat = faiss.IndexFlatL2(codes.shape[1])
    flat.add(codes)
    squared, _ = flat.search(queries, k)  # (m, k)
    return squared[:, -1]


def recall_at(index, queries: np.ndarray, kth_squared: np.ndarray, k: int, nprobe: int) -> float:
    """Share of the exact top-k found by `index` at `nprobe`, by distance, so ties between equal codes count."""
    import faiss

    squared, ids = index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=nprobe))  # type: ignore[call-arg]  # SWIG stubs  # (m, k)
    good = (ids >= 0) & (squared <= kth_squared[:, None] * (1 + 1e-5) + 1e-6)
    return float(good.mean())


class VectorIndex:
    """Nearest-neighbour search over (n, d) float32 codes labelled with our int64 catalogue ids."""

    def __init__(self, index, generation: int, meta: dict[str, Any]):
        self.index = index
        self.generation = generation
        self.meta = meta  # kind, nlist, nprobe, recall_at_10, build_seconds, ...
        self.nprobe = int(meta.get("nprobe", 0))
        if "largest_id" not in self.meta:  # saved before vectors.json recorded it
            self.meta["largest_id"] = _largest_id(index)
        self._ids: np.ndarray | None = None  # an exact index's ids, sorted; read from its id map on first use

    @classmethod
    def build(cls, ids: np.ndarray, codes: np.ndarray, generation: int,
              exact_limit: int = EXACT_LIMIT) -> VectorIndex:
        """A new index over `codes` (n, d) float32 labelled with `ids` (n,) int64, exact or IVF by size."""
        import faiss

        codes = np.ascontiguousarray(codes, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if codes.ndim != 2 or len(ids) != len(codes):
            raise ValueError(f"codes {codes.shape} and ids {ids.shape} do not match")
        started = time.perf_counter()
        n, d = codes.shape
        if n <= exact_limit:
            index = faiss.IndexIDMap2(faiss.IndexFlatL2(d))
            if n:
                index.add_with_ids(codes, ids)
            meta = {"kind": "exact", "recall_at_10": 1.0}
        else:
            index, meta = cls._build_ivf(ids, codes)
        meta |= {"images": n, "dimension": d, "largest_id": int(ids.max()) if n else -1,
                 "build_seconds": round(time.perf_counter() - started, 2)}
        shown = {k: v for k, v in meta.items() if k not in ("kind", "images", "dimension", "largest_id")}
        log.info("vectors: %s index over %d codes (%s)", meta["kind"], n,
                 ", ".join(f"{k} {v}" for k, v in shown.items()))
        return cls(index, generation, meta)

    @staticmethod
    def _build_ivf(ids: np.ndarray, codes: np.ndarray) -> tuple[Any, dict[str, Any]]:
        import faiss

        n, d = codes.shape
        rng = np.random.default_rng(0)
        nlist = ivf_lists(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        train = codes[rng.choice(n, min(n, nlist * TRAIN_PER_LIST), replace=False)]
        index.train(train)
        index.add_with_ids(codes, ids)
        queries = codes[rng.choice(n, min(n, TUNING_QUERIES), replace=False)]  # (m, d)
        kth = _exact_neighbours(codes, queries, 10)
        nprobe, recall, tried = 1, 0.0, {}
        while True:
            recall = recall_at(index, queries, kth, 10, nprobe)
            tried[nprobe] = round(recall, 4)
            if recall >= TARGET_RECALL or nprobe >= nlist:
                break
            nprobe = min(nlist, nprobe * 2)
        index.nprobe = nprobe
        return index, {"kind": "ivf-flat", "nlist": nlist, "nprobe": nprobe, "recall_at_10": round(recall, 4),
                       "recall_by_nprobe": tried}

    @property
    def dimension(self) -> int:
        """Code size."""
        return self.index.d

    @property
    def kind(self) -> str:
        """'exact' or 'ivf-flat'."""
        return str(self.meta.get("kind", "exact"))

    @property
    def largest_id(self) -> int:
        """The largest id in the index (-1 when it is empty); no larger id is ever in it."""
        return int(self.meta["largest_id"])

    def __len__(self) -> int:
        return self.index.ntotal

    def holds(self, ids: np.ndarray) -> np.ndarray:
        """Which of `ids` (n,) the index holds, as a bool (n,) array; for IVF judged by its largest id (see the top)."""
        import faiss

        ids = np.asarray(ids, np.int64).reshape(-1)
        if self.kind != "exact":
            return ids <= self.largest_id
        if self._ids is None:
            self._ids = np.sort(faiss.vector_to_array(self.index.id_map))
        if not len(self._ids):
            return np.zeros(len(ids), bool)
        at = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)  # (n,)
        return self._ids[at] == ids

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest `k` for each query row: (D, I), D Euclidean distances ascending, I ids (-1 pads)."""
        import faiss

        use_search_threads()
        xq = np.ascontiguousarray(xq, dtype=np.float32).reshape(-1, self.dimension)
        k = max(1, min(int(k), len(self))) if len(self) else 1
        if self.kind == "exact":
            squared, ids = self.index.search(xq, k)
        else:
            # A deep page (large k) can need more lists than the tuned nprobe holds: widen until it is filled.
            nprobe, nlist = self.nprobe, self.index.nlist
            while True:
                squared, ids = self.index.search(xq, k, params=faiss.SearchParametersIVF(nprobe=nprobe))  # type: ignore[call-arg]  # SWIG stubs
                if nprobe >= nlist or (ids[:, -1] >= 0).all():
                    break
                nprobe = min(nlist, nprobe * 4)
        return np.sqrt(np.maximum(squared, 0.0)), ids

    def file_name(self) -> str:
        """The index file of this generation."""
        return f"vectors-{self.generation}.faiss"

    def save(self, index_dir: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        """Write the index, then the JSON that commits it (each atomically); remove superseded index files."""
        import faiss

        index_dir = Path(index_dir)
        payload = faiss.serialize_index(self.index)  # uint8 numpy array
        atomic_write_bytes(index_dir / self.file_name(), payload.tobytes())
        meta = {"format": FORMAT, "generation": self.generation, "file": self.file_name(),
                "file_bytes": int(payload.nbytes), "count": len(self), **self.meta, **(extra or {})}
        atomic_write_bytes(index_dir / META_FILE, (json.dumps(meta, indent=1) + "\n").encode())
        self.meta = {k: v for k, v in meta.items() if k not in ("format", "generation", "file", "count")}
        for old in index_dir.glob("vectors*.faiss"):  # earlier generations (and the format-1 vectors.faiss)
            if old.name != self.file_name():
                old.unlink(missing_ok=True)

    @classmethod
    def load(cls, index_dir: str | os.PathLike, expected_generation: int, mmap: bool = True) -> VectorIndex:
        """Open the saved index (memory-mapped where faiss can); raise VectorsStale when it cannot be used."""
        import faiss

        index_dir = Path(index_dir)
        try:
            meta = json.loads((index_dir / META_FILE).read_text())
        except FileNotFoundError:
            raise VectorsStale(f"{index_dir / META_FILE} does not exist") from None
        except (OSError, ValueError) as exc:
            raise VectorsStale(f"{index_dir / META_FILE} is unreadable: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise VectorsStale(f"{index_dir / META_FILE} is not a lookalike vectors file of format {FORMAT}")
        generation = meta.get("generation")
        if generation != expected_generation:
            raise VectorsStale(f"the vectors are from generation {generation}, the catalogue is at "
                               f"{expected_generation}")
        path = index_dir / Path(str(meta.get("file", ""))).name  # a bare name: never outside index_dir
        try:
            if path.stat().st_size != meta.get("file_bytes"):
                raise VectorsStale(f"{path} is {path.stat().st_size} bytes, expected {meta.get('file_bytes')}")
            flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap and meta.get("kind") != "exact" else 0
            index = faiss.read_index(str(path), flags)
        except FileNotFoundError:
            raise VectorsStale(f"{path} does not exist") from None
        except RuntimeError as exc:
            raise VectorsStale(f"{path} is corrupt: {exc}") from None
        if index.ntotal != meta.get("count"):
            raise VectorsStale(f"{path} holds {index.ntotal} vectors, its header says {meta.get('count')}")
        if meta.get("kind") != "exact":
            index.nprobe = int(meta.get("nprobe", 1))  # type: ignore[attr-defined]  # an IVF index, read back
        meta = {k: v for k, v in meta.items() if k not in ("format", "generation", "file", "count")}
        return cls(index, int(generation), meta)
