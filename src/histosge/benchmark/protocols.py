"""The three benchmark protocols: which spots train, which are scored, and on which genes.

- **R** (recovery): a seeded random half of a section's spots trains, the other half is scored
  (``geometry.random_split``).
- **G** (4x generation): the coarse lattice trains (a quarter of the grid) and the measured spots
  at its midpoints are scored: exactly the situation of generating 4x denser spots, but with
  ground truth (``geometry.generation_split``). The split does not depend on the seed.
- **G9**, **G16** (9x and 16x generation): the same with a lattice 3 or 4 steps apart (one spot
  in 9 or 16 trains) and the measured spots at its 9x / 16x denser positions scored
  (``geometry.dense_points``). Not in the default suite; sections whose coarse lattice has
  fewer than ``MIN_TRAIN_SPOTS`` spots are skipped.
- **X** (cross-section): every spot of the other sections of the same tissue trains, every spot
  of the target section is scored. Only the target's image and spot positions are used.
- **R+**, **G+** (with a cohort): as R and G, and the other sections of the same dataset are
  known too (``prior_sources``): ``histosge`` reads an image-mode model fitted on them (a prior,
  ``HisToSGE(prior=...)``) and the baselines that can use more spots are fitted on them pooled
  with the section's training spots. her2st: the other sections of the same patient and those
  of other patients are two rows, reported apart.

Genes: the top-1000 seurat_v3 HVGs picked on the *training* spots only (for X: on the training
sections pooled, restricted to genes every section involved has), normalize_total(1e4) over
all genes of each spot, then log1p (``genes.select_hvgs`` / ``genes.log_normalize``).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np

from .. import geometry
from ..genes import choose_genes, log_normalize

PROTOCOLS = ("R", "G", "X", "G9", "G16", "R+", "G+")
#: Protocols with a cohort, and the within-section protocol each extends.
WITH_PRIOR = {"R+": "R", "G+": "G"}
#: The two kinds of other sections a cohort protocol reads, in report order.
PRIOR_SCOPES = ("same patient", "other patients")
#: Generation protocols and the density each scores.
GENERATION = {"G": 4, "G9": 9, "G16": 16}
#: Fewer training spots than this and a generation protocol skips the section (her2st at 9x: ~25).
MIN_TRAIN_SPOTS = 30
N_GENES = 1000
HOLDOUT = 0.5


@dataclass
class Split:
    """Indices into one section's spots: ``train`` fit the model, ``test`` are scored."""

    protocol: str
    train: np.ndarray
    test: np.ndarray

    def __post_init__(self):
        self.train = np.asarray(self.train, np.int64)
        self.test = np.asarray(self.test, np.int64)


def split_r(n_spots: int, seed: int, holdout: float = HOLDOUT) -> Split:
    """Protocol R: a seeded random ``holdout`` fraction is scored, the rest trains."""
    train, test = geometry.random_split(n_spots, holdout, seed)
    return Split("R", train, test)


def split_g(rows: np.ndarray, cols: np.ndarray, grid: str, factor: int = 4) -> Split:
    """Protocol G (G9, G16): train on the coarse lattice, score the measured spots at its
    ``factor``-times denser positions (4x: its midpoints)."""
    train, test = geometry.generation_split(rows, cols, grid, factor)
    return Split("G" if factor == 4 else f"G{factor}", train, test)


def within_section_genes(
    adata: ad.AnnData, train: np.ndarray, n_genes=N_GENES
) -> tuple[list[str], str, np.ndarray]:
    """(genes, HVG flavour, log1p expression of every spot) with HVGs picked on ``train`` only;
    ``n_genes``: a number of HVGs or a ``genes.GeneChoice`` (named genes, ``--all-genes``)."""
    mask = np.zeros(adata.n_obs, bool)
    mask[train] = True
    genes, flavour = choose_genes(adata, n_genes, train_mask=mask)
    return genes, flavour, log_normalize(adata, genes)


def cross_section_genes(
    train_sections: list[ad.AnnData], target: ad.AnnData, n_genes=N_GENES
) -> tuple[list[str], str]:
    """HVGs of the pooled training sections, among genes every training section and the target have.

    Only the target's gene *list* is consulted (which genes its panel measures), never its counts.
    """
    from ..model.training_data import pooled_genes

    return pooled_genes(train_sections, n_genes, among=list(target.var_names))


def cross_groups(names: list[str]) -> dict[str, list[str]]:
    """For protocol X: each target section -> the sections it is predicted from.

    Sections are grouped by tissue: her2st by patient (the letter of B4, C2, ...: only C has
    several sections here, so C2-C4 leave-one-out), every other dataset as one group
    (DLPFC 151673 <-> 151676). A section alone in its group has no X target.
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        dataset, section = name.split("/", 1)
        key = f"{dataset}/{section[0]}" if dataset == "her2st" else dataset
        groups.setdefault(key, []).append(name)
    out = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        for target in members:
            out[target] = [m for m in members if m != target]
    return out


def _patient(name: str) -> str:
    """her2st: the patient letter of a section (B4 -> B); every other dataset is one patient
    (DLPFC 151673 and 151676 are both from donor Br8100)."""
    dataset, section = name.split("/", 1)
    return f"{dataset}/{section[0]}" if dataset == "her2st" else dataset


def prior_sources(names: list[str]) -> dict[str, list[tuple[str, list[str]]]]:
    """For protocols R+ and G+: each section -> [(scope, the sections its prior and the pooled
    baselines learn from)], scope 'same patient' (the other sections of its patient) and
    'other patients' (every section of the same dataset from another patient), each where it
    has any. Never the section itself."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for target in names:
        dataset = target.split("/", 1)[0]
        same = [n for n in names if n != target and _patient(n) == _patient(target)]
        other = [n for n in names if n.split("/", 1)[0] == dataset and _patient(n) != _patient(target)]
        scopes = [(scope, srcs) for scope, srcs in zip(PRIOR_SCOPES, (same, other), strict=True) if srcs]
        if scopes:
            out[target] = scopes
    return out


def shared_genes(genes: list[str], sources: list[ad.AnnData]) -> list[str]:
    """The genes of ``genes`` that every one of ``sources`` measures (in ``genes``' order): what a
    prior and the pooled baselines are fitted on (the others are learnt from the section alone)."""
    have = [set(map(str, a.var_names)) for a in sources]
    return [g for g in genes if all(g in h for h in have)]
