"""Gene selection and normalisation, fitted on training spots only.

A model predicts the genes a user names (``GeneChoice.named``: always, whatever their
variance; a HER2 model must predict ERBB2 even where it is uniformly high) plus the top
``n_top`` HVGs of the *training* spots (seurat_v3 on raw counts, the paper's top 1000), or every
gene detected in at least ``MIN_DETECTED_FRACTION`` of them (``all_genes``). No information from
held-out spots leaks into the gene set. seurat_v3's loess fit fails on very small sections (e.g.
~90 training spots of her2st); we then fall back to scanpy's 'seurat' flavour on log-normalised
counts and record which flavour was used.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .errors import InputError

TARGET_SUM = 1e4
#: ``--all-genes`` keeps every gene detected in at least this fraction of the training spots; a
#: named gene detected in fewer (or in fewer than ``MIN_DETECTED_SPOTS``) is predicted, with a
#: warning, but never called reliable: there is too little to learn from.
MIN_DETECTED_FRACTION = 0.01
MIN_DETECTED_SPOTS = 3
#: The HVGs a model predicts by default (``--n-top-genes``).
N_TOP_GENES = 1000


@dataclass(frozen=True)
class GeneChoice:
    """Which genes a model predicts: named ones, plus HVGs or every detected gene.

    ``named`` are always predicted (in this order, after the HVGs), besides the ``n_top`` HVGs
    of the training spots, or every detected gene (``all_genes``).

    Attributes
    ----------
    named : tuple of str
        Genes always predicted, whatever their variance (``--genes``).
    n_top : int
        HVGs of the training spots predicted besides them (``--n-top-genes``; 0: none).
    all_genes : bool
        Every gene detected in at least ``MIN_DETECTED_FRACTION`` of the training spots instead
        of the HVGs (``--all-genes``).

    Raises
    ------
    InputError
        A negative ``n_top``, or ``n_top = 0`` with no named gene (nothing to predict).
    """

    named: tuple[str, ...] = ()
    n_top: int = N_TOP_GENES
    all_genes: bool = False

    def __post_init__(self):
        object.__setattr__(self, "named", tuple(str(g) for g in self.named))
        if isinstance(self.n_top, bool) or not isinstance(self.n_top, (int, np.integer)) or self.n_top < 0:
            raise InputError(f"must be a whole number >= 0, got {self.n_top!r}", where="--n-top-genes (n_top_genes)",
                             fix="e.g. --n-top-genes 1000 (0: only the genes named with --genes)")
        object.__setattr__(self, "n_top", int(self.n_top))
        if self.n_top == 0 and not self.named and not self.all_genes:
            raise InputError("no gene to predict: --n-top-genes 0 and no gene named", where="--n-top-genes",
                             fix="name genes with --genes ERBB2,GRB7 (or a file, one per line), or raise --n-top-genes")

    def record(self) -> dict:
        """What a model file records of the choice."""
        return {"named": list(self.named), "n_top_genes": self.n_top, "all_genes": self.all_genes,
                "min_detected_fraction": MIN_DETECTED_FRACTION}


def parse_gene_names(value, *, where: str = "--genes") -> tuple[list[str], list[str]]:
    """A user's gene list -> (names, duplicates dropped).

    A comma-separated string, a path to a text file with one name per line (``#`` starts a
    comment), or a list of names.

    Parameters
    ----------
    value : str or list of str or None
        What the user gave.
    where : str
        The option named in errors.

    Returns
    -------
    tuple of (list of str, list of str)
        The names, each once, in order; and those that were listed more than once.

    Raises
    ------
    InputError
        An empty list, a list file that does not exist or holds no name, or a bare number (the
        old ``--genes 3000`` meant a count: that is ``--n-top-genes`` now).
    """
    if value is None:
        return [], []
    if isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value]
    else:
        text = str(value).strip()
        if text.isdigit():
            raise InputError(f"{text!r} is a number, not a gene: --genes names genes now", where=where,
                             fix=f"use --n-top-genes {text} for the number of highly variable genes")
        path = Path(text)
        looks_like_file = path.suffix.lower() in (".txt", ".tsv", ".csv", ".list") or "/" in text or "\\" in text
        if path.is_file():
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"cannot read the gene list ({e})", where=str(path),
                                 fix="give a text file with one gene name per line") from None
            names = [ln.split("#", 1)[0].strip().split("\t")[0].strip().strip(",") for ln in lines]
            names = [n for n in names if n]
            if not names:
                raise InputError("the gene list file holds no gene name", where=str(path),
                                 fix="write one gene name per line (e.g. ERBB2)")
        elif looks_like_file:
            raise InputError("gene list file not found", where=str(path),
                             fix="check the path, or give the genes as a comma-separated list (--genes ERBB2,GRB7)")
        else:
            names = [n.strip() for n in text.split(",")]
    names = [n for n in names if n]
    if not names:
        raise InputError("the gene list is empty", where=where, fix="name at least one gene, e.g. --genes ERBB2")
    seen: dict[str, None] = {}
    dups = []
    for n in names:
        if n in seen:
            dups.append(n)
        seen.setdefault(n, None)
    return list(seen), sorted(set(dups), key=dups.index)


def check_named(named, available, *, where: str = "--genes", what: str = "the training sections") -> None:
    """Every named gene must be measured: one error that suggests close names for the others.

    Up to three close names the data holds per unknown one (``ERBB22 -> did you mean ERBB2?``),
    case ignored.

    Parameters
    ----------
    named : list of str
        The genes a user named.
    available : list of str
        The genes the data measures (``var_names``).
    where : str
        The option named in the error.
    what : str
        The data named in the error.

    Raises
    ------
    InputError
        A named gene the data does not measure.
    """
    have = set(map(str, available))
    missing = [g for g in named if g not in have]
    if not missing:
        return
    by_upper: dict[str, str] = {}
    for g in have:
        by_upper.setdefault(g.upper(), g)
    pool = list(by_upper)
    hints = []
    for g in missing[:5]:
        close = [by_upper[c] for c in difflib.get_close_matches(g.upper(), pool, n=3, cutoff=0.75)]
        hints.append(f"{g} -> did you mean {' or '.join(close)}?" if close else f"{g} (no close name)")
    more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
    raise InputError(f"{len(missing)} named gene{'s are' if len(missing) != 1 else ' is'} not measured in {what}: "
                     f"{'; '.join(hints)}{more}", where=where,
                     fix="use the names as the counts spell them (case matters), or drop them")


def detected_counts(adata: ad.AnnData, train_mask: np.ndarray | None = None) -> np.ndarray:
    """Training spots in which each gene of ``adata`` was detected (count > 0)."""
    X = adata.X if train_mask is None else adata[np.asarray(train_mask, bool)].X
    return np.asarray((X > 0).sum(axis=0)).ravel()


def too_sparse(n_detected: np.ndarray, n_spots: int) -> np.ndarray:
    """Genes detected in too few training spots to learn (see ``MIN_DETECTED_FRACTION``)."""
    return np.asarray(n_detected) < max(MIN_DETECTED_SPOTS, MIN_DETECTED_FRACTION * n_spots)


def choose_genes(adata: ad.AnnData, choice: GeneChoice | int, *, train_mask: np.ndarray | None = None
                 ) -> tuple[list[str], str]:
    """(genes, how the non-named ones were chosen) for ``choice`` on the training spots of ``adata``.

    HVGs come first (best rank first, exactly as :func:`select_hvgs`), then the named genes not
    among them, in the user's order; ``all_genes`` keeps the data's gene order.

    Parameters
    ----------
    adata : AnnData
        Raw counts of the training sections (pooled when several train).
    choice : GeneChoice or int
        The choice; an int is ``GeneChoice(n_top=...)`` (the HVGs alone, as before).
    train_mask : ndarray of bool, optional
        The training spots (default: all); held-out spots never choose genes.

    Returns
    -------
    tuple of (list of str, str)
        The genes, and how the non-named ones were chosen (the HVG flavour, 'all detected in
        >= 1%', or 'named only').

    Raises
    ------
    InputError
        A named gene the data does not measure (with close names), or too few training spots.
    """
    choice = GeneChoice(n_top=choice) if isinstance(choice, (int, np.integer)) else choice
    check_named(choice.named, adata.var_names)
    n_train = adata.n_obs if train_mask is None else int(np.asarray(train_mask, bool).sum())
    if choice.all_genes:
        if n_train < 3:
            raise InputError(f"only {n_train} training spots", where="training spots",
                             fix="use a section with more spots")
        det = detected_counts(adata, train_mask)
        keep = det >= max(1, MIN_DETECTED_FRACTION * n_train)
        genes, how = [str(g) for g in adata.var_names[keep]], f"all detected in >= {MIN_DETECTED_FRACTION:.0%}"
    elif choice.n_top > 0:
        genes, how = select_hvgs(adata, choice.n_top, train_mask=train_mask)
    else:
        genes, how = [], "named only"
    have = set(genes)
    genes = genes + [g for g in choice.named if g not in have]
    return genes, how


def select_hvgs(adata: ad.AnnData, n_top: int = 1000, *, train_mask: np.ndarray | None = None) -> tuple[list[str], str]:
    """Return (genes, flavour): the top ``n_top`` highly variable genes of the training spots."""
    import scanpy as sc  # heavy: only when genes are chosen, never for a command that checks a gene list
    train = adata if train_mask is None else adata[np.asarray(train_mask, bool)]
    counts = train.X
    if train.n_obs < 3:
        raise InputError(
            f"only {train.n_obs} training spots", where="training spots", fix="use a section with more spots"
        )
    # Genes never detected in the training spots carry no information and break loess.
    detected = np.asarray((counts > 0).sum(axis=0)).ravel() > 0
    sub = ad.AnnData(X=sp.csr_matrix(counts[:, detected]), var=train.var.iloc[np.flatnonzero(detected)].copy())
    sub.obs_names = train.obs_names
    n_avail = sub.n_vars
    if n_avail == 0:
        raise InputError("no gene is detected in the training spots", where="counts", fix="check the counts file")
    n_top = min(n_top, n_avail)
    if n_top == n_avail:
        return list(sub.var_names), "all"
    raw = bool(adata.uns.get("histosge", {}).get("raw_counts", True))
    if raw:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hv = sc.pp.highly_variable_genes(sub, flavor="seurat_v3", n_top_genes=n_top, inplace=False)
            # the chosen genes, best rank first (scanpy returns them in the input's gene order)
            ranked = hv[hv["highly_variable"].to_numpy()].sort_values("highly_variable_rank").index
            return [str(g) for g in ranked], "seurat_v3"
        except (ValueError, ZeroDivisionError, RuntimeError, np.linalg.LinAlgError):
            pass  # loess could not fit: fall back below
    logged = sub.copy()
    if raw:
        sc.pp.normalize_total(logged, target_sum=TARGET_SUM)
        sc.pp.log1p(logged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hv = sc.pp.highly_variable_genes(logged, flavor="seurat", n_top_genes=n_top, inplace=False)
    order = np.argsort(-hv["dispersions_norm"].fillna(-np.inf).to_numpy(), kind="stable")[:n_top]
    return [str(logged.var_names[i]) for i in order], "seurat"


def log_normalize(adata: ad.AnnData, genes: list[str] | None = None) -> np.ndarray:
    """normalize_total(1e4) over *all* genes of each spot, then log1p, restricted to ``genes``.

    Library size is computed on all genes, as in the paper (normalise, then subset to HVGs).
    Returns a dense float32 array (spots x genes).
    """
    if not adata.uns.get("histosge", {}).get("raw_counts", True):
        X = adata[:, genes].X if genes is not None else adata.X
        return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)
    X = adata.X
    X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(X)
    lib = np.asarray(X.sum(axis=1)).ravel()
    lib[lib == 0] = 1.0
    if genes is not None:
        idx = adata.var_names.get_indexer(genes)
        if (idx < 0).any():
            missing = [g for g, i in zip(genes, idx, strict=True) if i < 0][:5]
            raise InputError(f"genes missing from the section: {missing}", where="genes", fix="use genes it has")
        X = X[:, idx]
    dense = X.toarray().astype(np.float64)
    dense *= (TARGET_SUM / lib)[:, None]
    return np.log1p(dense).astype(np.float32)
