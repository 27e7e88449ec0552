"""The report's spatial-domain section: the HisToSGE paper's Figure 5, scored on held-out spots.

One table (ARI per section x protocol x method, k-means next to STAGATE, mean ± sd over seeds);
its domain maps are drawn by ``figures.domain_maps``. Only sections with manual annotation
(DLPFC) are shown: her2st's labels are clusters of expression.
"""

from __future__ import annotations

import numpy as np

from .results import method_order

MANUAL = "manual annotation"
_NAMES = {"kmeans": "k-means", "stagate": "STAGATE"}


def _fmt(values: list, digits: int = 3) -> str:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def _cell(recs: list[dict], field: str) -> str:
    """mean ± sd of ``field`` over the seeds of ``recs``; says on how many seeds when not all have it."""
    have = [r[field] for r in recs if r.get(field) is not None]
    if not have:
        return "not run"
    text = _fmt(have)
    n_seeds = len({r["seed"] for r in recs})
    return text if len(have) == n_seeds else f"{text} ({len(have)} of {n_seeds} seeds)"


def _per_seed(recs: list[dict], field: str) -> list[dict]:
    """One record per seed that carries ``field`` (the measured ARIs repeat on every method's record)."""
    out: dict = {}
    for r in recs:
        if r.get(field) is not None:
            out.setdefault(r["seed"], r)
    seeds = {r["seed"] for r in recs}
    return [out.get(s, {"seed": s}) for s in sorted(seeds)]


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


#: Protocols of the domain table (the denser generation protocols' k-means ARI is in the main tables).
PROTOCOLS = ("R", "G", "X")


def table(records: list[dict], order=method_order) -> list[str]:
    """Markdown table: section, protocol (R, G, X), method, seeds, k-means ARI, STAGATE ARI."""
    recs = [r for r in records if r.get("labels") == MANUAL and r["protocol"] in PROTOCOLS]
    if not recs:
        return []
    from collections import defaultdict

    by: dict = defaultdict(list)
    for r in recs:
        by[(r["dataset"], r["section"], r["protocol"])].append(r)
    rows = []
    proto_order = {p: i for i, p in enumerate(PROTOCOLS)}
    for key in sorted(by, key=lambda k: (k[0], k[1], proto_order.get(k[2], 9))):
        group = by[key]
        name = f"{key[0]}/{key[1]}"
        seeds = sorted({r["seed"] for r in group})
        measured = [_per_seed(group, "ari_measured"), _per_seed(group, "ari_measured_stagate")]
        rows.append([name, key[2], "(measured expression)", str(len(seeds)),
                     _cell(measured[0], "ari_measured"), _cell(measured[1], "ari_measured_stagate")])
        for method in order(r["method"] for r in group):
            rs = [r for r in group if r["method"] == method]
            rows.append([name, key[2], method, str(len({r["seed"] for r in rs})), _cell(rs, "ari"),
                         _cell(rs, "ari_stagate")])
    header = ["section", "protocol", "method", "seeds", "ARI k-means", "ARI STAGATE"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def section(records: list[dict], meta: dict | None, order=method_order) -> list[str]:
    """The report's section (empty when no record has manual labels)."""
    rows = table(records, order)
    if not rows:
        return []
    note = stagate_note(records, meta)
    return [
        "",
        "## Spatial domains: k-means and STAGATE (the paper's Figure 5, held-out)",
        "",
        "ARI against the manual DLPFC layers of the domains found on each method's expression (protocols R, "
        "G and X; G9 and G16 have their k-means ARI in the tables above): training "
        "spots measured + held-out spots predicted (X: every spot predicted), mean ± sd over seeds. "
        "'(measured expression)' clusters the measured values of every spot: the ceiling. k-means: the "
        "`ari` field (top 30 PCs). STAGATE: `ari_stagate`, its graph-attention autoencoder "
        "(stagate-modern, package defaults, 1000 epochs) then a tied-covariance Gaussian mixture "
        "(mclust EEE's model) with k = the number of layers (`benchmark.domains`). The paper scored "
        "its Figure 5 on spots that include the ones each model trained on; here a held-out spot "
        "is always a prediction.",
        "",
        *rows,
        *(["", note] if note else []),
    ]


# --------------------------------------------------------------------------------------------
# the README's summary


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def comparison_table(records: list[dict], methods, protocols=("R", "G")) -> list[str]:
    """One row per method (and one for the measured expression): held-out pcc and the ARI of both
    clusterers per protocol, each the mean over the DLPFC sections and the seeds that have it
    ('not run' where none has); the highest of each column among methods in bold."""
    recs = [r for r in records if r.get("labels") == MANUAL and r["protocol"] in protocols]
    if not recs:
        return []
    cols = [(p, f) for p in protocols for f in ("pcc", "ari", "ari_stagate")]
    values = {m: {c: _mean(r.get(c[1]) for r in recs if r["method"] == m and r["protocol"] == c[0]) for c in cols}
              for m in methods}
    best = {c: max((v[c] for v in values.values() if v[c] is not None), default=None) for c in cols}
    names = {"pcc": "pcc", "ari": "ARI k-means", "ari_stagate": "ARI STAGATE"}
    header = ["method", *[f"{p} {names[f]}" for p, f in cols]]
    rows = []
    measured = {"ari": "ari_measured", "ari_stagate": "ari_measured_stagate"}
    row = ["(measured expression)"]
    for p, f in cols:
        v = _mean(r.get(measured[f]) for r in recs if r["protocol"] == p) if f in measured else None
        row.append("-" if f == "pcc" else ("not run" if v is None else f"{v:.3f}"))
    rows.append(row)
    for m in methods:
        row = [m]
        for c in cols:
            v = values[m][c]
            if v is None:
                row.append("not run")
            else:
                row.append(f"**{v:.3f}**" if best[c] is not None and v == best[c] else f"{v:.3f}")
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]
