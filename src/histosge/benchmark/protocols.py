"""The benchmark protocols as registered objects (``Protocol``): which spots train, which are
scored, whether the split is seeded, whether the other sections are known, which methods run.

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

Each is a ``Protocol`` (``protocols()``, ``get_protocol``); no other module compares protocol
names. Which sections share a tissue comes from the datasets registry
(``datasets.Dataset.tissue_group``).

Genes: the top-1000 seurat_v3 HVGs picked on the *training* spots only (for X: on the training
sections pooled, restricted to genes every section involved has), normalize_total(1e4) over
all genes of each spot, then log1p (``genes.select_hvgs`` / ``genes.log_normalize``).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np

from .. import datasets, geometry
from ..genes import choose_genes, log_normalize

#: The two kinds of other sections a cohort protocol reads, in report order.
PRIOR_SCOPES = ("same patient", "other patients")
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


@dataclass(frozen=True)
class Protocol:
    """A benchmark protocol: which spots train, which are scored, and which methods it admits.

    Attributes
    ----------
    name : str
        What ``--protocols`` takes and the records hold.
    title : str
        The report's line for it.
    holdout : float or None
        Recovery: a random ``holdout`` fraction of the section's spots is scored, the rest trains;
        the split is seeded (``seeded``).
    factor : int or None
        Generation: the lattice ``factor`` times coarser trains (4: every other row and column) and
        the measured spots at its denser positions are scored; the same split for every seed.
    cross : bool
        Cross-section: every spot of the other sections of the target's tissue
        (``datasets.Dataset.tissue_group``) trains, every spot of the target is scored; methods
        that read the target's measured spots are not admitted.
    cohort : bool
        As its split, and the other sections of the dataset are known too
        (``prior_sources``); the only protocols that admit the methods that read them.
    min_train : int
        A generation split with fewer training spots skips the section (``MIN_TRAIN_SPOTS``).
    default : bool
        In the default run (``histosge bench`` without ``--protocols``).
    all_spots_scores : bool
        Also scored on every spot, training spots included, as the paper scored (inflated; the
        ``*_all_spots_inflated`` fields of a record).
    """

    name: str
    title: str
    holdout: float | None = None
    factor: int | None = None
    cross: bool = False
    cohort: bool = False
    min_train: int = 0
    default: bool = False
    all_spots_scores: bool = False

    @property
    def seeded(self) -> bool:
        """The split depends on the seed (recovery)."""
        return self.holdout is not None

    def split(self, n: int, rows: np.ndarray, cols: np.ndarray, grid: str, seed: int) -> Split:
        """The split of a section of ``n`` spots at grid positions ``rows``, ``cols`` (``grid``
        lattice) for ``seed``; a cross-section protocol trains on none of its spots."""
        if self.cross:
            return Split(self.name, np.zeros(0, np.int64), np.arange(n))
        if self.holdout is not None:
            train, test = geometry.random_split(n, self.holdout, seed)
        else:
            train, test = geometry.generation_split(rows, cols, grid, self.factor)
        return Split(self.name, train, test)

    def admits(self, spec) -> bool:
        """Whether the method of ``spec`` (a ``methods.MethodSpec``) runs under this protocol: the
        methods that read the other sections only with a cohort; no method that reads the target's
        measured spots across sections."""
        if spec.needs_other_sections:
            return self.cohort
        return not (self.cross and spec.needs_target_expression)


_REGISTRY: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` (report order is registration order)."""
    if protocol.name in _REGISTRY:
        raise ValueError(f"protocol {protocol.name!r} registered twice")
    _REGISTRY[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    """The protocol ``name``.

    Parameters
    ----------
    name : str
        A registered protocol's name (``R``, ``G``, ``X`` ...).

    Returns
    -------
    Protocol
        Its registration.

    Raises
    ------
    InputError
        An unknown name (the message lists the known ones).
    """
    if name not in _REGISTRY:
        from ..errors import InputError

        raise InputError(f"unknown protocol {name}", where="--protocols", fix=f"choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def protocols() -> list[Protocol]:
    """Every protocol, in report order.

    Returns
    -------
    list of Protocol
        The registered protocols (the built-in R, G, G9, G16, X, R+, G+ first).
    """
    return list(_REGISTRY.values())


for _p in (
    Protocol("R", "R: recovery (seeded random half of the spots trains, the other half is scored)",
             holdout=HOLDOUT, default=True, all_spots_scores=True),
    Protocol("G", "G: 4x generation (coarse lattice trains, the measured spots at its midpoints are scored)",
             factor=4, min_train=MIN_TRAIN_SPOTS, default=True),
    Protocol("G9", "G9: 9x generation (a lattice 3 steps apart trains, the measured spots between are scored)",
             factor=9, min_train=MIN_TRAIN_SPOTS),
    Protocol("G16", "G16: 16x generation (a lattice 4 steps apart trains, the measured spots between are scored)",
             factor=16, min_train=MIN_TRAIN_SPOTS),
    Protocol("X", "X: cross-section (other sections of the same tissue train, every spot of the target is scored)",
             cross=True, default=True),
    Protocol("R+", "R+: recovery with a cohort (as R; the other sections of the dataset are known too: a prior for "
                   "histosge, pooled spots for ridge and stnet)", holdout=HOLDOUT, cohort=True),
    Protocol("G+", "G+: 4x generation with a cohort (as G; the other sections of the dataset are known too)",
             factor=4, cohort=True),
):
    register_protocol(_p)

#: The built-in protocols' names, in report order.
PROTOCOLS = tuple(_REGISTRY)
#: Protocols with a cohort, and the within-section protocol each extends.
WITH_PRIOR = {p.name: next(q.name for q in _REGISTRY.values() if not q.cohort and (q.holdout, q.factor) ==
                           (p.holdout, p.factor)) for p in _REGISTRY.values() if p.cohort}
#: Generation protocols and the density each scores.
GENERATION = {p.name: p.factor for p in _REGISTRY.values() if p.factor and not p.cohort}


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


def tissue_of(name: str) -> str:
    """The tissue group of section ``name`` (``dataset:section``): its dataset's
    ``datasets.Dataset.tissue_group`` (her2st: the patient, the letter of B4, C2 ...; DLPFC 151673
    and 151676 are one donor, Br8100), within the dataset; a dataset not registered is one group."""
    dataset, section = datasets.split_name(name)
    entry = datasets.get_dataset(dataset)
    return f"{dataset}/{entry.tissue_group(section)}" if entry is not None else dataset


def cross_groups(names: list[str]) -> dict[str, list[str]]:
    """For protocol X: each target section -> the sections it is predicted from, the other sections
    of its tissue group (``tissue_of``). A section alone in its group has no X target."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(tissue_of(name), []).append(name)
    out = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        for target in members:
            out[target] = [m for m in members if m != target]
    return out


def prior_sources(names: list[str]) -> dict[str, list[tuple[str, list[str]]]]:
    """For protocols R+ and G+: each section -> [(scope, the sections its prior and the pooled
    baselines learn from)], scope 'same patient' (the other sections of its patient) and
    'other patients' (every section of the same dataset from another patient), each where it
    has any. Never the section itself."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for target in names:
        dataset = datasets.split_name(target)[0]
        same = [n for n in names if n != target and tissue_of(n) == tissue_of(target)]
        other = [n for n in names if datasets.split_name(n)[0] == dataset and tissue_of(n) != tissue_of(target)]
        scopes = [(scope, srcs) for scope, srcs in zip(PRIOR_SCOPES, (same, other), strict=True) if srcs]
        if scopes:
            out[target] = scopes
    return out


def shared_genes(genes: list[str], sources: list[ad.AnnData]) -> list[str]:
    """The genes of ``genes`` that every one of ``sources`` measures (in ``genes``' order): what a
    prior and the pooled baselines are fitted on (the others are learnt from the section alone)."""
    have = [set(map(str, a.var_names)) for a in sources]
    return [g for g in genes if all(g in h for h in have)]
