"""The report's spatial-domain section: the HisToSGE paper's Figure 5, scored on held-out spots.

One table (ARI per section x protocol x method, a column per clusterer that ran: k-means,
Leiden, STAGATE, STMask; mean ± sd over seeds);
its domain maps are drawn by ``figures.domain_maps``. Only sections with manual annotation
(DLPFC) are shown: her2st's labels are clusters of expression.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import domains as D
from . import results as RS
from .protocols import protocols
from .results import method_order

MANUAL = "manual annotation"


def _cell(values: pd.Series, n_seeds: int, digits: int = 3) -> str:
    """mean ± sd of one field over seeds ('not run' without a value); says on how many seeds when not
    every seed has it."""
    if values.empty:
        return "not run"
    finite = pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
    if finite.empty:
        text = "-"
    elif len(finite) == 1:
        text = f"{finite.iloc[0]:.{digits}f}"
    else:
        text = f"{finite.mean():.{digits}f} ± {finite.std(ddof=1):.{digits}f}"
    return text if len(values) == n_seeds else f"{text} ({len(values)} of {n_seeds} seeds)"


def _have(df: pd.DataFrame, field: str) -> pd.Series:
    """The values of ``field`` the records have."""
    return df[field].dropna() if field in df else pd.Series(dtype=float)


def _per_seed(df: pd.DataFrame, field: str) -> pd.Series:
    """One value of ``field`` per seed that has it (the measured ARIs repeat on every method's record)."""
    return _have(df.dropna(subset=[field]).drop_duplicates("seed") if field in df else df, field)


def stagate_note(records: list[dict], meta: dict | None) -> str:
    """Why STAGATE has no numbers (or none on some rows), from run.json's ``stagate_skipped``."""
    meta = meta or {}
    parts = meta.get("parts") or [meta]
    skipped = sorted({p["stagate_skipped"] for p in parts if p.get("stagate_skipped")})
    if skipped:
        return "STAGATE was skipped: " + "; ".join(skipped) + "."
    if not any("ari_stagate" in r for r in records):
        return ("STAGATE was not run: it is opt-in (`histosge bench --domains kmeans,stagate`), since one "
                "clustering of a DLPFC section takes minutes on a CPU (docs/BENCHMARK.md).")
    return ""




def fields(clusterer: str) -> tuple[str, str]:
    """(record field of a method's ARI, of the measured expression's) for ``clusterer``."""
    return ("ari", "ari_measured") if clusterer == "kmeans" else (f"ari_{clusterer}", f"ari_measured_{clusterer}")


def clusterers_in(records: list[dict]) -> list[str]:
    """k-means, then every other clusterer some record has an ARI of (STAGATE always, as a column
    that says 'not run' when none has)."""
    have = {c for r in records for c in D.CLUSTERERS if fields(c)[0] in r}
    return [c for c in D.CLUSTERERS if c in have or c in ("kmeans", "stagate")]


def table(records: list[dict], order=method_order) -> list[str]:
    """Markdown table: section, protocol (R, G, X), method, seeds, and the ARI of each clusterer."""
    df = RS.frame(records)
    if "labels" not in df:
        return []
    # the default protocols (the denser generation protocols' k-means ARI is in the main tables)
    shown = [p.name for p in protocols() if p.default]
    df = df[(df["labels"] == MANUAL) & df["protocol"].isin(shown)]
    if df.empty:
        return []
    clusterers = clusterers_in(records)
    rows = []
    groups = sorted(df.groupby(["dataset", "section", "protocol"]), key=lambda kv: (*kv[0][:2],
                                                                                   shown.index(kv[0][2])))
    for (dataset, section, protocol), g in groups:
        name, n_seeds = f"{dataset}/{section}", g["seed"].nunique()
        rows.append([name, protocol, "(measured expression)", str(n_seeds),
                     *(_cell(_per_seed(g, fields(c)[1]), n_seeds) for c in clusterers)])
        for method in order(g["method"]):
            rs = g[g["method"] == method]
            n = rs["seed"].nunique()
            rows.append([name, protocol, method, str(n), *(_cell(_have(rs, fields(c)[0]), n) for c in clusterers)])
    header = ["section", "protocol", "method", "seeds", *(f"ARI {D.NAMES[c]}" for c in clusterers)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def section(records: list[dict], meta: dict | None, order=method_order) -> list[str]:
    """The report's section (empty when no record has manual labels)."""
    rows = table(records, order)
    if not rows:
        return []
    note = stagate_note(records, meta)
    clusterers = clusterers_in(records)
    names = [D.NAMES[c] for c in clusterers]
    leiden = ("Leiden: `ari_leiden`, scanpy's pca -> neighbors -> leiden at the resolution that gives k "
              "clusters. ") if "leiden" in clusterers else ""
    stmask = ("STMask: `ari_stmask`, the authors' group's dual-channel masked graph autoencoder "
              "(`benchmark.stmask`). ") if "stmask" in clusterers else ""
    return [
        "",
        f"## Spatial domains: {', '.join(names[:-1])} and {names[-1]} (the paper's Figure 5, held-out)",
        "",
        "ARI against the manual DLPFC layers of the domains found on each method's expression (protocols R, "
        "G and X; G9 and G16 have their k-means ARI in the tables above): training "
        "spots measured + held-out spots predicted (X: every spot predicted), mean ± sd over seeds. "
        "'(measured expression)' clusters the measured values of every spot: the ceiling. k-means: the "
        f"`ari` field (top 30 PCs). {leiden}STAGATE: `ari_stagate`, its graph-attention autoencoder "
        "(stagate-modern, package defaults, 1000 epochs) then a tied-covariance Gaussian mixture "
        f"(mclust EEE's model) with k = the number of layers (`benchmark.domains`). {stmask}The paper scored "
        "its Figure 5 on spots that include the ones each model trained on; here a held-out spot "
        "is always a prediction.",
        "",
        *rows,
        *(["", note] if note else []),
    ]
