"""Each task's predictions as a file (``predictions/*.npz``), so the report's figures are redrawn from
the output folder alone, long after the fits.

One file per (section, protocol, seed[, cohort]): the measured expression of every spot, the
split, the positions and labels, each method's prediction of the scored spots, and the spatial
domains an extra clusterer found. float32 as fitted, compressed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..datasets import split_name

FOLDER = "predictions"


@dataclass
class Saved:
    """One task's predictions: ``pred[method]`` holds the rows of ``test`` (every gene of ``genes``)."""

    name: str  # 'dlpfc:151673'
    protocol: str
    seed: int
    genes: list[str]
    y: np.ndarray  # (spots, genes) log1p expression of every spot, measured
    train: np.ndarray
    test: np.ndarray
    xy: np.ndarray
    labels: np.ndarray | None  # object array, None where unlabelled
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    domains: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # clusterer -> column -> labels
    prior_from: str | None = None

    @property
    def dataset(self) -> str:
        return split_name(self.name)[0]

    @property
    def n(self) -> int:
        return len(self.y)

    def stem(self) -> str:
        return stem(self.name, self.protocol, self.seed, self.prior_from)


def stem(name: str, protocol: str, seed: int, prior_from: str | None = None) -> str:
    """The file stem of one task's predictions: ``dlpfc_151673_R_0`` (and ``_<scope>`` with a prior)."""
    scope = f"_{prior_from.replace(' ', '-')}" if prior_from else ""
    return f"{file_stem(name)}_{protocol}_{seed}{scope}"


def save(folder: str | os.PathLike, saved: Saved) -> Path:
    """Write ``saved`` to ``folder/predictions/<section>_<protocol>_<seed>.npz`` (atomically)."""
    out = Path(folder) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    meta = {"name": saved.name, "protocol": saved.protocol, "seed": saved.seed, "prior_from": saved.prior_from,
            "methods": list(saved.pred)}
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "genes": np.asarray(saved.genes, dtype=str),
        "y": np.asarray(saved.y, np.float32),
        "train": np.asarray(saved.train, np.int64),
        "test": np.asarray(saved.test, np.int64),
        "xy": np.asarray(saved.xy, np.float64),
        **{f"pred/{m}": np.asarray(p, np.float32) for m, p in saved.pred.items()},
        **{f"domains/{c}/{k}": np.asarray(lab) for c, found in saved.domains.items() for k, lab in found.items()},
    }
    if saved.labels is not None:
        arrays["labels"] = np.array(["" if v is None else str(v) for v in saved.labels])
        arrays["labelled"] = np.array([v is not None for v in saved.labels])
    path = out / f"{saved.stem()}.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


def load(path: str | os.PathLike) -> Saved:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        labels = None
        if "labels" in z:
            labels = np.array([str(v) if ok else None for v, ok in zip(z["labels"], z["labelled"], strict=True)],
                              dtype=object)
        domains: dict = {}
        for key in z.files:
            if key.startswith("domains/"):
                _, clusterer, column = key.split("/", 2)
                domains.setdefault(clusterer, {})[column] = z[key]
        return Saved(meta["name"], meta["protocol"], int(meta["seed"]), [str(g) for g in z["genes"]], z["y"],
                     z["train"], z["test"], z["xy"], labels, {m: z[f"pred/{m}"] for m in meta["methods"]},
                     domains, meta.get("prior_from"))


def file_stem(name: str) -> str:
    """A section name as a file name's stem: ``dlpfc:151673`` -> ``dlpfc_151673``."""
    return "_".join(split_name(name)) if (":" in name or "/" in name) else name


def index(folder: str | os.PathLike) -> list[dict]:
    """What each saved task of a benchmark folder is (its ``meta``, ``genes``, the extra clusterers it
    holds and its ``path``), without reading its arrays; [] for runs made before predictions were saved."""
    out = []
    for path in sorted((Path(folder) / FOLDER).glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            meta["genes"] = [str(g) for g in z["genes"]]
            meta["clusterers"] = sorted({k.split("/")[1] for k in z.files if k.startswith("domains/")})
        out.append({**meta, "dataset": split_name(meta["name"])[0], "path": path})
    return out


def exists(folder: str | os.PathLike) -> bool:
    """Whether a benchmark folder saved predictions (runs before results.jsonl did not)."""
    return any((Path(folder) / FOLDER).glob("*.npz"))
