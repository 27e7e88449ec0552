"""The report's spatial-domain section: the HisToSGE paper's Figure 5, scored on held-out spots.

One table (ARI per section x protocol x method, k-means next to STAGATE, mean ± sd over seeds)
and one domain map per section and protocol (rows: clusterers; columns: the manual layers, the
measured expression, each method's training spots measured + held-out spots predicted). Only
sections with manual annotation (DLPFC) are shown: her2st's labels are clusters of expression.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import domains as D

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


def table(records: list[dict], order) -> list[str]:
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


def section(records: list[dict], meta: dict | None, order) -> list[str]:
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
# figure


def _match(clusters: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Relabel ``clusters`` so each maps to the manual layer it overlaps most (colours comparable
    across panels); clusters left over keep numbers after the layers'."""
    from scipy.optimize import linear_sum_assignment

    ok = D.known(labels)
    cats = sorted({str(v) for v in labels[ok]})
    lab = np.array([cats.index(str(v)) for v in labels[ok]])
    ids = np.unique(clusters)
    overlap = np.array([[np.sum((clusters[ok] == c) & (lab == j)) for j in range(len(cats))] for c in ids])
    rows, cols = linear_sum_assignment(-overlap)
    mapping = {ids[r]: c for r, c in zip(rows, cols, strict=True)}
    spare = iter(range(len(cats), len(cats) + len(ids)))
    return np.array([mapping[c] if c in mapping else next(spare) for c in clusters])


def maps(entry: dict, path: Path, order, seed: int = 0) -> bool:
    """One PNG: rows k-means and STAGATE, columns manual layers, measured, each method (seed ``seed``)."""
    found = entry.get("domains") or {}
    sec, split = entry["section"], entry["split"]
    labels = sec.labels
    if "stagate" not in found or labels is None:
        return False
    k = D.n_domains(labels)
    methods = [m for m in order(entry["pred"]) if m in found["stagate"]]
    columns = ["measured", *methods]
    y = entry["y"]

    def kmeans_of(key):
        if key == "measured":
            return D.kmeans(y, k, seed)
        mixed = y.copy()  # in X every spot is a test spot
        mixed[split.test] = entry["pred"][key][split.test]
        if np.ptp(mixed, axis=0).max() <= 1e-12:
            return np.zeros(sec.n, np.int64)
        return D.kmeans(mixed, k, seed)

    grids = {"kmeans": {c: kmeans_of(c) for c in columns}, "stagate": {c: found["stagate"][c] for c in columns}}
    what = ("training spots measured + held-out spots predicted" if split.protocol != "X"
            else "every spot predicted from other sections")
    draw_maps(sec.xy, labels, grids, f"{sec.name}, protocol {split.protocol}, seed {seed}: spatial domains "
              f"(k = {k}); {what}", path)
    return True


def draw_maps(xy: np.ndarray, labels, grids: dict, title: str, path: Path) -> None:
    """Rows: clusterers of ``grids`` ({clusterer: {column: clusters}}); columns: the manual layers,
    then each column of ``grids``; titles carry each panel's ARI."""
    from .report import _plt, _save_png

    plt = _plt()
    labels = np.asarray(labels, dtype=object)
    ok = D.known(labels)
    cats = sorted({str(v) for v in labels[ok]})
    manual = np.full(len(labels), -1)
    manual[ok] = [cats.index(str(v)) for v in labels[ok]]
    names = list(grids)
    columns = list(grids[names[0]])
    ncol = len(columns) + 1
    fig, axes = plt.subplots(len(names), ncol, figsize=(1.9 * ncol, 2.15 * len(names)), squeeze=False)
    size = max(1.0, 2000.0 / len(labels))
    cmap = plt.get_cmap("tab10")

    def panel(ax, lab, text):
        m = lab >= 0
        ax.scatter(xy[m, 0], xy[m, 1], c=cmap(lab[m] % 10), s=size, linewidths=0)
        ax.set_title(text, fontsize=7)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_xticks([])
        ax.set_yticks([])

    for row, name in enumerate(names):
        panel(axes[row, 0], manual, "manual layers")
        axes[row, 0].set_ylabel(_NAMES.get(name, name), fontsize=9)
        for col, key in enumerate(columns, start=1):
            lab = np.asarray(grids[name][key])
            panel(axes[row, col], _match(lab, labels), f"{key} ({_NAMES.get(name, name)} ARI {D.ari(labels, lab):.2f})")
    import textwrap

    fig.suptitle(textwrap.fill(title, width=30 * ncol), fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


def draw(kept: dict, out: Path, order, seed: int = 0) -> list[Path]:
    """A map for every kept (section, protocol) with STAGATE labels, DLPFC first."""
    written = []
    for key in sorted(kept, key=lambda k: (k[0], ("R", "G", "G9", "G16", "X").index(k[1]))):
        entry = kept[key]
        if entry["section"].labels is None or entry["section"].dataset == "her2st":
            continue
        path = out / f"figure5_{entry['section'].name.replace('/', '_')}_{key[1]}.png"
        if maps(entry, path, order, seed):
            written.append(path)
    return written


def caption(section_name: str, protocol: str) -> str:
    return (f"Spatial domains on {section_name}, protocol {protocol} (first seed): k-means (top row) and STAGATE "
            "(bottom row) on the measured expression and on each method's training spots (measured) + held-out "
            "spots (predicted); colours matched to the manual layers they overlap most.")


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
