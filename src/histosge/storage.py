"""How an output is laid out on disk: each array once, compressed, predictions at a stated precision.

Every output histosge writes (``superres``, ``recover``, ``predict``, cohort runs) goes through
``_atomic.write_output``, which calls :func:`write_h5ad` or :func:`write_zarr`. For an output
of histosge (an AnnData with ``uns['histosge']``):

* **Precision.** Dense float matrices in ``X`` and ``layers`` are rounded to multiples of
  ``2**-QUANTUM_BITS`` (1/1024 of a log1p unit; no value moves by more than 1/2048) and stay
  float32. The low mantissa bits are then zero and compress away: 1.35 bytes per value instead
  of 3.3 for float32 (DLPFC 151673 4x, docs/SCALING.md). ``lossless=True`` keeps every bit.
* **Each array once.** A layer whose rows are identical to ``X``'s (``superres``: the generated
  spots of ``layers['predicted']``) is an HDF5 *virtual dataset*: those rows are read from
  ``X``, the others from ``uns['histosge']['storage']['rows_<layer>']``. h5py, anndata and
  scanpy read it as an ordinary array; a layer equal to ``X`` everywhere is a hard link.
* **Compression.** gzip (level ``GZIP_LEVEL``) with byte shuffling, chunks of whole rows of
  about 1 MB, for the matrices and every other numeric array over ``BIG_BYTES`` (thumbnails in
  ``uns['spatial']``, ``obsm``); anndata writes the rest (obs, var, small uns entries) as usual.
  The compressed arrays are added in memory (HDF5's core driver) and the file image written in
  one go, so a full disk is one clean error (HDF5 can crash the process when it fails to flush
  compressed chunks to a full disk).
* **Features.** ``obsm['features']`` (the encoder's output, recomputable and kept in the
  feature cache) is left out unless ``features=True``.

What was done is recorded in ``uns['histosge']['storage']``. An AnnData without
``uns['histosge']`` (not ours) is written losslessly and whole, only compressed. Zarr stores
have no virtual datasets: there a layer is stored in full (compressed, rounded the same way).
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np

from . import keys

#: Values of X and layers are multiples of 2**-QUANTUM_BITS unless ``lossless``.
QUANTUM_BITS = 10
QUANTUM = 2.0**-QUANTUM_BITS
GZIP_LEVEL = 4
#: Target bytes of one uncompressed chunk (whole rows).
CHUNK_BYTES = 1 << 20
#: A layer with more alternating runs of rows (same as X / different) than this is stored whole.
MAX_LINKED_RUNS = 64
#: Numeric arrays in uns and obsm larger than this are compressed like the matrices.
BIG_BYTES = 1 << 16
_ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}


def is_ours(adata: ad.AnnData) -> bool:
    return isinstance(adata.uns.get(keys.HISTOSGE), dict)


def quantize(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to multiples of ``QUANTUM`` (float32; NaN and inf unchanged)."""
    x = np.asarray(x, np.float32)
    return (np.round(x * np.float32(2**QUANTUM_BITS)) / np.float32(2**QUANTUM_BITS)).astype(np.float32)


def _dense_float(m) -> bool:
    return isinstance(m, np.ndarray) and m.ndim == 2 and np.issubdtype(m.dtype, np.floating)


def _big(value) -> bool:
    return (isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.nbytes > BIG_BYTES
            and value.ndim >= 1)


def _split(tree: dict, prefix: str, out: dict[str, np.ndarray]) -> dict:
    """``tree`` (nested dicts) without its big numeric arrays, which go to ``out`` by file path."""
    kept = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            kept[k] = _split(v, f"{prefix}/{k}", out)
        elif _big(v):
            out[f"{prefix}/{k}"] = v
        else:
            kept[k] = v
    return kept


def _runs(same: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, stop, same) for each run of equal values in a boolean vector."""
    if not len(same):
        return []
    edges = np.flatnonzero(np.diff(same.astype(np.int8))) + 1
    starts = np.r_[0, edges]
    stops = np.r_[edges, len(same)]
    return [(int(a), int(b), bool(same[a])) for a, b in zip(starts, stops, strict=True)]


class Plan:
    """What goes where: the AnnData anndata writes (``shell``), the dense matrices written with
    byte shuffling (``dense``: path in the file -> array), and linked layers."""

    def __init__(self, adata: ad.AnnData, *, features: bool, lossless: bool, links: bool):
        ours = is_ours(adata)
        lossy = ours and not lossless
        matrices = {"X": adata.X, **{f"layers/{k}": v for k, v in adata.layers.items()}}
        self.dense: dict[str, np.ndarray] = {}
        self.links: dict[str, tuple[np.ndarray, list[tuple[int, int, bool]]]] = {}
        record: dict = {}
        for path, m in matrices.items():
            if _dense_float(m) and m.size:
                self.dense[path] = quantize(m) if lossy else np.asarray(m)
        x = self.dense.get("X")
        if links and ours and x is not None:
            for path in [p for p in self.dense if p != "X"]:
                arr = self.dense[path]
                if arr.shape != x.shape or arr.dtype != x.dtype:
                    continue
                same = np.all((arr == x) | (np.isnan(arr) & np.isnan(x)), axis=1)
                runs = _runs(same)
                if same.any() and len(runs) <= MAX_LINKED_RUNS:
                    self.links[path] = (arr[~same], runs)
                    del self.dense[path]
        obsm = dict(adata.obsm)
        self.arrays: dict[str, np.ndarray] = {}  # other big arrays: compressed, as they are
        if ours and not features and keys.FEATURES in obsm:
            del obsm[keys.FEATURES]
            record["features"] = "not stored (the encoder's output; keep it with --keep-features / features=True)"
        elif ours and keys.FEATURES in obsm:
            record["features"] = "stored in obsm['features']"
        uns = dict(adata.uns)
        if ours:
            record["precision"] = (f"X and layers rounded to multiples of 2^-{QUANTUM_BITS} ({QUANTUM:g}); no value "
                                   f"moved by more than {QUANTUM / 2:g}" if lossy else "exact (float32 as computed)")
            record["compression"] = f"gzip level {GZIP_LEVEL}, byte shuffle, chunks of whole rows"
            for path, (_, runs) in self.links.items():
                n_same = sum(b - a for a, b, s in runs if s)
                layer = path.split("/", 1)[1]
                record.setdefault("linked_layers", {})[layer] = (
                    f"{n_same} of {adata.n_obs} rows are X's rows (HDF5 virtual dataset); the others are "
                    f"uns['histosge']['storage']['rows_{layer}']")
            uns[keys.HISTOSGE] = {**adata.uns[keys.HISTOSGE], "storage": record}
        self.record = record
        if links:  # HDF5: big arrays of uns and obsm compressed too (zarr compresses everything anyway)
            uns = _split(uns, "uns", self.arrays)
            for k in [k for k, v in obsm.items() if _big(v) and v.ndim == 2]:
                self.arrays[f"obsm/{k}"] = obsm.pop(k)
        layers = {k: v for k, v in adata.layers.items() if f"layers/{k}" not in self.dense
                  and f"layers/{k}" not in self.links}
        self.shell = ad.AnnData(X=None if "X" in self.dense or adata.X is None else adata.X, obs=adata.obs,
                                var=adata.var, uns=uns, obsm=obsm, varm=dict(adata.varm), obsp=dict(adata.obsp),
                                varp=dict(adata.varp), layers=layers)
        self.n_obs, self.n_vars = adata.n_obs, adata.n_vars


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    rows = max(1, min(shape[0], CHUNK_BYTES // max(1, row)))
    return (rows, *shape[1:])


def _create(f, path: str, arr: np.ndarray):
    ds = f.create_dataset(path, data=arr, chunks=_chunks(arr.shape, arr.dtype.itemsize), shuffle=True,
                          compression="gzip", compression_opts=GZIP_LEVEL)
    ds.attrs.update(_ARRAY_ATTRS)
    return ds


def write_h5ad(adata: ad.AnnData, path: str | os.PathLike, *, features: bool = False,
               lossless: bool = False) -> None:
    """Write ``adata`` to ``path`` (not atomically: ``_atomic.write_output`` calls this on a
    temporary name) by the rules of the module docstring."""
    import h5py

    plan = Plan(adata, features=features, lossless=lossless, links=True)
    plan.shell.write_h5ad(Path(path))
    if not plan.dense and not plan.links and not plan.arrays:
        return
    with h5py.File(path, "r+", driver="core", backing_store=True) as f:
        for where, arr in {**plan.dense, **plan.arrays}.items():
            _create(f, where, arr)
        x = f["X"]
        for where, (own, runs) in plan.links.items():
            if not len(own):
                f[where] = x  # identical everywhere: one dataset under two names
                continue
            layer = where.split("/", 1)[1]
            own_path = f"uns/{keys.HISTOSGE}/storage/rows_{layer}"
            _create(f, own_path, own)
            layout = h5py.VirtualLayout(shape=x.shape, dtype=x.dtype)
            src_x = h5py.VirtualSource(".", "X", shape=x.shape)
            src_own = h5py.VirtualSource(".", own_path, shape=own.shape)
            k = 0
            for a, b, same in runs:
                if same:
                    layout[a:b] = src_x[a:b]
                else:
                    layout[a:b] = src_own[k : k + (b - a)]
                    k += b - a
            f.create_virtual_dataset(where, layout).attrs.update(_ARRAY_ATTRS)


def write_zarr(adata: ad.AnnData, path: str | os.PathLike, *, features: bool = False,
               lossless: bool = False) -> None:
    """Write ``adata`` as a zarr store: rounded and without features as :func:`write_h5ad`, every
    array stored in full (zarr has no virtual datasets) with zarr's default compressor."""
    plan = Plan(adata, features=features, lossless=lossless, links=False)
    shell = plan.shell
    if "X" in plan.dense:
        shell.X = plan.dense["X"]
    for where, arr in plan.dense.items():
        if where.startswith("layers/"):
            shell.layers[where.split("/", 1)[1]] = arr
    shell.write_zarr(Path(path))
