"""Fingerprints that say which spots a model has seen, and which file made an output.

A spot is identified by its measured counts (the row of raw counts with its gene names), not
by its barcode: Visium reuses one barcode list on every slide. A model file keeps the 64-bit
hashes of its training spots, so a prior fitted on a section can be refused for that same
section even after the section was re-read, subset or renamed. One hash over all genes changes
when a gene column is added or removed, so a model also keeps ``spot_identity``: each spot's
position and hashes of its counts in ``GENE_GROUPS`` groups of genes (a gene's group is fixed by
its name); an added or dropped gene changes one group, the spot is still recognised
(``same_spots``).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import scipy.sparse as sp


def spot_hashes(adata) -> np.ndarray:
    """uint64 per spot: a hash of its counts (values and gene names of its non-zero entries)."""
    X = adata.X
    X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    genes = np.asarray(adata.var_names.astype(str))
    gene_ids = np.frombuffer(b"".join(hashlib.blake2b(g.encode(), digest_size=8).digest() for g in genes),
                             dtype="<u8") if len(genes) else np.zeros(0, "<u8")
    out = np.empty(X.shape[0], np.uint64)
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        h = hashlib.blake2b(digest_size=8)
        h.update(gene_ids[X.indices[lo:hi]].tobytes())
        h.update(np.asarray(X.data[lo:hi], np.float64).tobytes())
        out[i] = np.frombuffer(h.digest(), "<u8")[0]
    return out


#: Groups of genes whose counts are hashed apart (``spot_identity``).
GENE_GROUPS = 16
_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic): a well-spread hash of each value."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _gene_ids(genes) -> np.ndarray:
    return np.frombuffer(b"".join(hashlib.blake2b(str(g).encode(), digest_size=8).digest() for g in genes),
                         dtype="<u8").astype(np.uint64) if len(genes) else np.zeros(0, np.uint64)


def spot_identity(adata) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 per spot: a hash of its position ``obsm['spatial']``; uint32 spots x ``GENE_GROUPS``:
    a hash of its non-zero counts within each group of genes, 0 for an empty group)."""
    X = adata.X
    X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    ids = _gene_ids(np.asarray(adata.var_names.astype(str)))
    n = X.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(X.indptr))
    gene = ids[X.indices]
    entry = _mix(gene ^ _mix(np.ascontiguousarray(X.data, np.float64).view(np.uint64)))
    acc = np.zeros(n * GENE_GROUPS, np.uint64)
    with np.errstate(over="ignore"):
        np.add.at(acc, rows * GENE_GROUPS + (gene >> np.uint64(60)).astype(np.int64) % GENE_GROUPS, entry)
    groups = np.where(acc == 0, np.uint64(0), _mix(acc) >> np.uint64(32)).astype(np.uint32).reshape(n, GENE_GROUPS)
    from . import keys

    xy = np.ascontiguousarray(np.asarray(adata.obsm[keys.SPATIAL], np.float64)[:, :2]).view(np.uint64)
    return _mix(_mix(xy[:, 0]) ^ xy[:, 1]), groups


def same_spots(query: tuple[np.ndarray, np.ndarray], known: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Which spots of ``query`` (``spot_identity``) are spots of ``known``: at the same position, at
    least 3 non-empty gene groups equal, and at most one group in four of those differing (one,
    at least): a gene column or a few added or dropped. Two different spots at one position (two
    sections on one array design) agree on that many groups only by chance, which is below one in
    10^4 per spot even with a dozen genes of low counts."""
    q_pos, q_groups = (np.asarray(a) for a in query)
    k_pos, k_groups = (np.asarray(a) for a in known)
    out = np.zeros(len(q_pos), bool)
    if not len(q_pos) or not len(k_pos):
        return out
    order = np.argsort(k_pos, kind="stable")
    lo, hi = np.searchsorted(k_pos[order], q_pos, "left"), np.searchsorted(k_pos[order], q_pos, "right")
    for i in np.flatnonzero(hi > lo):  # one candidate per position, rarely more
        cand = k_groups[order[lo[i]:hi[i]]]
        equal = cand == q_groups[i]
        same = (equal & (cand != 0)).sum(1)
        out[i] = bool(np.any((same >= 3) & ((~equal).sum(1) <= np.maximum(1, same // 4))))
    return out


def section_fingerprint(adata) -> str:
    """SHA-256 of a section's sorted spot hashes (independent of spot order and names)."""
    return hashlib.sha256(np.sort(spot_hashes(adata)).tobytes()).hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


#: Packages whose versions decide the numbers a run produces.
PACKAGES = ("histosge", "numpy", "scipy", "scikit-learn", "scanpy", "scikit-misc", "anndata", "pandas", "torch",
            "scikit-image", "numba", "tifffile", "pillow", "h5py")


def environment() -> dict:
    """What a result depends on besides its inputs: package versions, Python, the CPU, threads.
    Recorded in every benchmark's run.json, so a number can be traced to the machine that made it."""
    import importlib.metadata as md
    import platform

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu, "cpu_cores": cores,
           "packages": versions}
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads")} for p in threadpool_info()]
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    return out
