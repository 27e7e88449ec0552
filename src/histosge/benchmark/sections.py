"""Find the sections of a data folder, read them, and compute (cached) image features once each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np

from .. import geometry, keys
from ..datasets import section_name, split_name
from ..errors import InputError


@dataclass
class Section:
    """One section, read and encoded: everything the protocols need."""

    name: str  # "dlpfc:151673" (datasets.section_name)
    adata: ad.AnnData  # raw counts, as read
    features: np.ndarray  # (n, dim) image features of every spot
    encoder: str

    @property
    def dataset(self) -> str:
        return split_name(self.name)[0]

    @property
    def section(self) -> str:
        return split_name(self.name)[1]

    @property
    def n(self) -> int:
        return self.adata.n_obs

    @property
    def rows(self) -> np.ndarray:
        return self.adata.obs["array_row"].to_numpy(np.float64)

    @property
    def cols(self) -> np.ndarray:
        return self.adata.obs["array_col"].to_numpy(np.float64)

    @property
    def xy(self) -> np.ndarray:
        return np.asarray(self.adata.obsm[keys.SPATIAL], np.float64)

    @property
    def grid(self) -> str:
        return geometry.grid_of(self.adata)

    def spots(self, idx: np.ndarray | None = None):
        """The section's spots (``model.Spots``: features, grid rows and columns, pixel centres),
        all of them or those at ``idx``."""
        from ..model.contexts import Spots

        spots = Spots(self.features, self.rows, self.cols, self.xy)
        return spots if idx is None else spots.subset(idx)

    @property
    def labels(self) -> np.ndarray | None:
        """Ground-truth labels (object array, None where unlabelled), or None if the section has none."""
        if "annotation" not in self.adata.obs:
            return None
        lab = self.adata.obs["annotation"].astype(object).to_numpy()
        lab = np.array([None if (v is None or v != v) else str(v) for v in lab], dtype=object)
        return lab if any(v is not None for v in lab) else None


def normalise_name(name: str) -> str:
    """'dlpfc/151673' or 'dlpfc:151673' -> 'dlpfc:151673' (``datasets.section_name``); a bare
    folder name stays as it is."""
    name = name.strip().strip("/")
    dataset, section = split_name(name)
    return section_name(dataset, section) if (":" in name or "/" in name) else name


def discover(data_dir: str | os.PathLike) -> list[str]:
    """Every section of every registered dataset found in the data folder (``histosge.datasets``:
    DLPFC's ``dlpfc/<id>/``, her2st's ``her2st/`` and any registered later), by dataset in the
    registry's order, each sorted."""
    from ..datasets import list_datasets
    from ..read.resolve import known_sections

    root = Path(data_dir)
    if not root.is_dir():
        raise InputError("data folder not found", where=str(root),
                         fix="give --data the folder holding the datasets (histosge.datasets.list_datasets())")
    order = list_datasets()
    names = [normalise_name(n) for n in known_sections(root) if ":" in n]
    names.sort(key=lambda n: (order.index(split_name(n)[0]) if split_name(n)[0] in order else len(order), n))
    if not names:
        raise InputError(f"no sections found of the datasets {', '.join(order)}", where=str(root),
                         fix="point --data at a folder laid out like the shared data folder, or name --sections")
    return names


def read(name: str, data_dir: str | os.PathLike) -> ad.AnnData:
    """Read section ``name`` ('dlpfc:151673', 'her2st:C2', or a folder inside ``data_dir``)."""
    from ..read import read_section

    return read_section(normalise_name(name), data_dir=data_dir)


def load(
    names: list[str],
    data_dir: str | os.PathLike,
    *,
    encoder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    named_genes: tuple[str, ...] = (),
) -> dict[str, Section]:
    """Read every section and extract features of all its spots with one encoder (cached on disk).
    ``named_genes`` every section must measure: checked when all are read, before any encoding."""
    from .. import encode
    from ..genes import check_named
    from ..read.image import image_for

    enc = encode.create(encoder or encode.DEFAULT_ENCODER)
    out = {}
    read_ = {name: read(name, data_dir) for name in names}
    for name, adata in read_.items():
        check_named(named_genes, adata.var_names, what=name)
    for name, adata in read_.items():
        source, scale = image_for(adata)
        diameter = keys.spot_diameter_px(adata)
        feats = encode.extract(
            source,
            np.asarray(adata.obsm[keys.SPATIAL], np.float64),
            scale,
            diameter,
            encoder=enc,
            cache_dir=cache_dir,
            progress=progress,
        )
        out[name] = Section(name, adata, np.asarray(feats, np.float32), enc.name)
    return out
