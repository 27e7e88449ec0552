"""Named datasets: ``dlpfc:151673`` and ``her2st:C2`` resolved in a data folder, one entry each.

A dataset says where its sections live inside the data folder (``find_sections``), how to read
one (``read``), which sections share a tissue (``tissue_group``: protocol X and the cohort prior
train on the other sections of a group), what its labels are, and which marker genes show its
structure. ``read_section``, the benchmark and the plots all look datasets up here, so a new
dataset is one ``Dataset`` plus one ``register_dataset`` line (docs/EXTENDING.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad

from .errors import InputError


@dataclass(frozen=True)
class Dataset:
    """One layout of sections inside a data folder."""

    name: str
    #: Section names found in the data folder (sorted); [] when the dataset is absent.
    find_sections: Callable[[Path], list[str]]
    #: Read section ``section`` from the data folder.
    read: Callable[..., ad.AnnData]
    #: The files and folders ``read`` reads (so an output can never overwrite them).
    inputs: Callable[[Path, str], list[Path]]
    #: Sections with the same group share a tissue (another section of it can train a model for it).
    tissue_group: Callable[[str], str] = lambda section: ""
    #: What ``obs['annotation']`` holds, in words for reports (None: no labels).
    labels: str | None = None
    #: Genes whose maps show the tissue's structure (plots draw these first when predicted).
    markers: tuple[str, ...] = field(default_factory=tuple)
    #: The dataset's own image; ``--image`` cannot replace it.
    own_image: bool = False
    #: Its reader names the sections it has: a name ``find_sections`` does not list is still handed
    #: to ``read`` (which says which sections there are).
    own_sections: bool = False
    #: Its sections are small (a few hundred spots): ``histosge bench --quick`` runs one of them.
    small_sections: bool = False


_REGISTRY: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> Dataset:
    _REGISTRY[dataset.name] = dataset
    return dataset


def get_dataset(name: str) -> Dataset | None:
    return _REGISTRY.get(name.lower())


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def data_dir(value: str | os.PathLike | None, source: str) -> Path:
    """The data folder names are looked up in (``value`` or ``$HISTOSGE_DATA``), or one clear error."""
    if value is None:
        value = os.environ.get("HISTOSGE_DATA")
    if not value:
        raise InputError(
            f"{source!r} is not a file or folder, and no data folder is set to look it up in",
            where=source,
            fix="give a Space Ranger folder or .h5ad path, or set HISTOSGE_DATA to the data folder",
        )
    root = Path(value)
    if not root.is_dir():
        raise InputError("data folder not found", where=str(root), fix="set HISTOSGE_DATA to the shared data folder")
    return root


def section_name(dataset: str, section: str) -> str:
    """A section's name: ``dataset:section`` (``dlpfc:151673``), the one spelling (``split_name``
    also reads ``dataset/section``)."""
    return f"{dataset}:{section}"


def split_name(name: str) -> tuple[str, str]:
    """(dataset, section) of ``dataset:section`` (or ``dataset/section``); a bare folder name is both."""
    name = str(name).strip().strip("/")
    for sep in (":", "/"):
        if sep in name:
            dataset, section = name.split(sep, 1)
            return dataset, section
    return name, name


def known_sections(root: str | os.PathLike) -> list[str]:
    """Every ``dataset:section`` name found in the data folder ``root``."""
    root = Path(root)
    return [section_name(name, s) for name in list_datasets() for s in _REGISTRY[name].find_sections(root)]


# -- the datasets of the shared data folder --------------------------------------------------------
def _dlpfc_sections(root: Path) -> list[str]:
    from .read.spaceranger import COUNTS_FILE

    folder = root / "dlpfc"
    return sorted(p.name for p in folder.iterdir() if (p / COUNTS_FILE).exists()) if folder.is_dir() else []


def _read_dlpfc(root: Path, section: str, *, image=None, check_alignment: bool = True) -> ad.AnnData:
    from .read.spaceranger import read_spaceranger

    return read_spaceranger(root / "dlpfc" / section, image=image, library_id=section,
                            check_alignment=check_alignment)


def _her2st_sections(root: Path) -> list[str]:
    from .read.legacy_st import her2st_sections

    return her2st_sections(root / "her2st")


def _read_her2st(root: Path, section: str, *, image=None, check_alignment: bool = True) -> ad.AnnData:
    from .read.legacy_st import read_her2st

    if image is not None:
        raise InputError("her2st sections bring their own image", where="--image", fix="drop --image")
    return read_her2st(root / "her2st", section, check_alignment=check_alignment)


register_dataset(Dataset(
    "dlpfc", _dlpfc_sections, _read_dlpfc, lambda root, s: [root / "dlpfc" / s],
    tissue_group=lambda s: "dlpfc", labels="manual annotation",
    markers=("MOBP", "PCP4", "SNAP25", "MBP", "NRGN")))
register_dataset(Dataset(
    "her2st", _her2st_sections, _read_her2st, lambda root, s: [root / "her2st"],
    tissue_group=lambda s: s[:1],  # the patient (B4, C2, ...): sections of one tumour share its tissue
    labels="expression clusters (her2st)", markers=("ERBB2", "GRB7", "KRT19", "COL1A1", "CD74"), own_image=True,
    own_sections=True, small_sections=True))
