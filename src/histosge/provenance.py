"""Fingerprints that say which spots a model has seen, and which file made an output.

A spot is identified by its measured counts (the row of raw counts with its gene names), not
by its barcode: Visium reuses one barcode list on every slide. A model file keeps the 64-bit
hashes of its training spots, so a prior fitted on a section can be refused for that same
section even after the section was re-read, subset or renamed.
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
