"""report.md from the records of results.json, plus the marker-gene and spatial-domain figures."""

from __future__ import annotations

import io
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..evaluate import domains_ari

#: Marker genes drawn per dataset (only those among the HVGs of the protocol's training spots).
MARKERS = {"dlpfc": ("MOBP", "PCP4", "SNAP25"), "her2st": ("ERBB2",)}
METRICS = ("pcc", "pcc_top50", "mse", "mae", "ari")
_PROTOCOL_TITLES = {
    "R": "R: recovery (seeded random half of the spots trains, the other half is scored)",
    "G": "G: 4x generation (coarse lattice trains, the measured spots at its midpoints are scored)",
    "G9": "G9: 9x generation (a lattice 3 steps apart trains, the measured spots between are scored)",
    "G16": "G16: 16x generation (a lattice 4 steps apart trains, the measured spots between are scored)",
    "X": "X: cross-section (other sections of the same tissue train, every spot of the target is scored)",
    "R+": "R+: recovery with a cohort (as R; the other sections of the dataset are known too: a prior for "
          "histosge, pooled spots for ridge and stnet)",
    "G+": "G+: 4x generation with a cohort (as G; the other sections of the dataset are known too)",
}


#: Order of protocols in tables; the scoreboard covers issue 5's targets (R, G, X) only.
_ORDER = ("R", "G", "G9", "G16", "X", "R+", "G+")
_TARGETS = ("R", "G", "X")
#: Protocols with a cohort (issue 16): scored by ``prior_scoreboard``, not ``scoreboard``.
_WITH_PRIOR = ("R+", "G+")
#: Methods that are not baselines in the cohort scoreboard (ours, and the mean's pcc of 0).
_NOT_BASELINES = ("mean", "histosge", "histosge-paper", "histosge+prior")


def _fmt(values: list[float], digits: int) -> str:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return "-"
    m = float(np.mean(vals))
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {float(np.std(vals, ddof=1)):.{digits}f}"


def _order(methods) -> list[str]:
    from .methods import ALL_METHODS

    return sorted(set(methods), key=lambda m: ALL_METHODS.index(m) if m in ALL_METHODS else 99)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _group(records: list[dict], *keys: str) -> dict:
    out: dict = defaultdict(list)
    for r in records:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def with_prior_labels(records: list[dict]) -> list[dict]:
    """Records of R+ and G+ with the section named with its cohort ('C2 (same patient: C3+C4)'),
    so that the two cohorts of a section are two rows wherever records are grouped by section."""
    return [{**r, "section": f"{r['section']} ({r['prior_from']}: {'+'.join(r['prior_sections'])})"}
            if r.get("prior_from") else r for r in records]


def tables(records: list[dict]) -> list[str]:
    """Markdown tables: per protocol and dataset, one row per section x method, mean ± sd over seeds."""
    lines: list[str] = []
    honest = with_prior_labels(records)
    for protocol in [p for p in _ORDER if any(r["protocol"] == p for r in honest)]:
        lines += ["", f"### {_PROTOCOL_TITLES[protocol]}", ""]
        recs = [r for r in honest if r["protocol"] == protocol]
        for dataset in sorted({r["dataset"] for r in recs}):
            drecs = [r for r in recs if r["dataset"] == dataset]
            seeds = sorted({r["seed"] for r in drecs})
            lines += [f"**{dataset}** (seeds: {', '.join(map(str, seeds))}; held-out spots only)", ""]
            header = ["section", "method", "train/test", "pcc", "pcc_top50", "mse", "mae", "ARI", "fit s"]
            rows = []
            by = _group(drecs, "section", "method")
            for section in sorted({r["section"] for r in drecs}):
                for method in _order(m for (s, m) in by if s == section):
                    rs = by[(section, method)]
                    tt = f"{rs[0]['n_train']}/{rs[0]['n_test']}"
                    if protocol == "X":
                        src = "+".join(rs[0].get("train_sections", []))
                        tt = f"{src} ({rs[0]['n_train']})/{rs[0]['n_test']}"
                    rows.append(
                        [
                            section,
                            method,
                            tt,
                            _fmt([r["pcc"] for r in rs], 3),
                            _fmt([r["pcc_top50"] for r in rs], 3),
                            _fmt([r["mse"] for r in rs], 4),
                            _fmt([r["mae"] for r in rs], 4),
                            _fmt([r.get("ari") for r in rs], 3),
                            _fmt([r["fit_seconds"] for r in rs], 1),
                        ]
                    )
            lines += _table(header, rows) + [""]
            measured = _group([r for r in drecs if r.get("ari_measured") is not None], "section")
            if measured:
                ref = ", ".join(
                    f"{s}: {_fmt([r['ari_measured'] for r in rs if r['method'] == rs[0]['method']], 3)}"
                    for (s,), rs in sorted(measured.items())
                )
                lines += [
                    f"ARI of k-means on the *measured* expression (the ceiling for the ARI column): {ref}.",
                    "",
                ]
    return lines


def summary(records: list[dict]) -> list[str]:
    """Mean held-out pcc over the sections of each dataset, one row per method (R+ and G+, whose
    rows differ in their cohort, are summarised by ``prior_scoreboard``)."""
    records = [r for r in records if r["protocol"] not in _WITH_PRIOR]
    cols = sorted({(r["protocol"], r["dataset"]) for r in records}, key=lambda k: (_ORDER.index(k[0]), k[1]))
    header = ["method"] + [f"{p} {d} pcc" for p, d in cols] + [f"{p} {d} top50" for p, d in cols]
    rows = []
    for method in _order(r["method"] for r in records):
        row = [method]
        for metric in ("pcc", "pcc_top50"):
            for p, d in cols:
                vals = [
                    r[metric] for r in records if r["method"] == method and r["protocol"] == p and r["dataset"] == d
                ]
                row.append(f"{np.mean(vals):.3f}" if vals else "n/a")
        rows.append(row)
    return _table(header, rows)


def _nanmean(values: list) -> float:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _method_means(records: list[dict]) -> dict[str, dict[str, float]]:
    """method -> mean of each metric over ``records`` (its seeds), NaN where none has it."""
    return {method: {m: _nanmean([r.get(m) for r in rs]) for m in METRICS}
            for (method,), rs in _group(records, "method").items()}


README_METHODS = ("knn", "ridge", "stnet", "histogene", "histosge", "ridge+pooled", "stnet+pooled", "histosge+prior")


def readme_tables(records: list[dict], methods=README_METHODS) -> list[str]:
    """The README's benchmark tables, one per protocol: pcc / pcc_top50 / MSE (DLPFC: / ARI),
    means over the seeds in ``records``, the best pcc and pcc_top50 of each row in bold."""
    by = _group(with_prior_labels(records), "dataset", "section", "protocol", "method")
    out: list[str] = []
    for protocol in _ORDER:
        shown = [m for m in methods if any(k[2] == protocol and k[3] == m for k in by)]
        if not shown:
            continue
        rows = []
        for dataset, section in sorted({(k[0], k[1]) for k in by if k[2] == protocol}):
            means = _method_means([r for m in shown for r in by.get((dataset, section, protocol, m), [])])
            vals = {m: means[m] for m in shown if m in means}
            best_pcc = max(vals, key=lambda m: vals[m]["pcc"])
            best_top = max(vals, key=lambda m: vals[m]["pcc_top50"])
            cells = []
            for m in shown:
                if m not in vals:
                    cells.append("-")
                    continue
                v = vals[m]
                pcc = f"**{v['pcc']:.3f}**" if m == best_pcc else f"{v['pcc']:.3f}"
                top = f"**{v['pcc_top50']:.3f}**" if m == best_top else f"{v['pcc_top50']:.3f}"
                cell = f"{pcc} / {top} / {v['mse']:.3f}"
                if dataset == "dlpfc" and np.isfinite(v["ari"]):
                    cell += f" / {v['ari']:.2f}"
                cells.append(cell)
            rows.append([f"{dataset}/{section}", protocol, *cells])
        out += ["", *_table(["section", "protocol", *shown], rows)]
    return out[1:]


def scoreboard(records: list[dict], ours: str = "histosge") -> list[str]:
    """Is ``ours`` first on every row? Per section x protocol, means over seeds.

    The targets: R and G: a higher pcc and pcc_top50 than every other method and an MSE no worse
    than knn's; X: a higher pcc than ridge; DLPFC (manual layers): an ARI at least knn's.
    A row lists what it misses, so a loss cannot hide in a long table. G9 and G16 are not targets.
    """
    if not any(r["method"] == ours for r in records):
        return []
    by = _group([r for r in records if r["protocol"] in _TARGETS], "dataset", "section", "protocol")
    header = ["section", "protocol", "seeds", f"{ours} pcc / top50 / mse", "best other pcc", "best other top50",
              "knn mse", "ARI (ours / knn)", "first?"]
    rows, n_ok, n_rows = [], 0, 0
    for (dataset, section, protocol), recs in sorted(by.items(), key=lambda kv: (_ORDER.index(kv[0][2]), kv[0])):
        means = _method_means(recs)
        if ours not in means:
            continue
        mine = means[ours]
        others = {m: v for m, v in means.items() if m != ours and m != "mean"}
        if not others:
            continue
        misses = []
        best_pcc = max(others.items(), key=lambda kv: kv[1]["pcc"])
        best_top = max(others.items(), key=lambda kv: kv[1]["pcc_top50"])
        if protocol == "X":
            if "ridge" in others and not mine["pcc"] > others["ridge"]["pcc"]:
                misses.append(_miss("pcc <= ridge", recs, ours, "ridge", "pcc"))
        else:
            if not mine["pcc"] > best_pcc[1]["pcc"]:
                misses.append(_miss(f"pcc <= {best_pcc[0]}", recs, ours, best_pcc[0], "pcc"))
            if not mine["pcc_top50"] > best_top[1]["pcc_top50"]:
                misses.append(_miss(f"top50 <= {best_top[0]}", recs, ours, best_top[0], "pcc_top50"))
            if "knn" in others and mine["mse"] > others["knn"]["mse"]:
                misses.append(_miss("mse > knn", recs, ours, "knn", "mse", lower_is_better=True, strict=False))
        ari = "-"
        if dataset == "dlpfc" and "knn" in others and np.isfinite(mine["ari"]):
            ari = f"{mine['ari']:.3f} / {others['knn']['ari']:.3f}"
            if mine["ari"] < others["knn"]["ari"]:
                misses.append(_miss("ARI < knn", recs, ours, "knn", "ari", strict=False))
        n_rows += 1
        n_ok += not misses
        seeds = len({r["seed"] for r in recs})
        rows.append([
            f"{dataset}/{section}", protocol, str(seeds),
            f"{mine['pcc']:.3f} / {mine['pcc_top50']:.3f} / {mine['mse']:.4f}",
            f"{best_pcc[1]['pcc']:.3f} ({best_pcc[0]})", f"{best_top[1]['pcc_top50']:.3f} ({best_top[0]})",
            f"{others['knn']['mse']:.4f}" if "knn" in others else "-", ari,
            "yes" if not misses else "no: " + ", ".join(misses),
        ])
    return [f"`{ours}` meets every target on {n_ok} of {n_rows} rows (means over seeds; X compares pcc with "
            "ridge only, as the target does). A miss says on how many seeds it is also lost seed by seed.",
            "", *_table(header, rows)]


def prior_scoreboard(records: list[dict], ours: str = "histosge+prior", without: str = "histosge") -> list[str]:
    """Issue 16's targets, row by row (protocols R+ and G+; a row is a section with one cohort):
    ``ours`` (with a prior) >= 1.2x the best baseline's pcc, with and without pooled spots, and
    first on pcc_top50 and MSE; on her2st B4 G+ ahead of ridge+pooled; on DLPFC an ARI at least
    knn's within the seed spread (the mean of the per-seed differences no worse than one
    standard deviation of them). ``without``: the same model without the prior, shown beside.
    Means over seeds."""
    recs = [r for r in records if r["protocol"] in _WITH_PRIOR]
    if not any(r["method"] == ours for r in recs):
        return []
    by = _group(with_prior_labels(recs), "dataset", "section", "protocol")
    header = ["section (cohort)", "protocol", "seeds", f"{ours} pcc / top50 / mse", f"{without}",
              "best baseline (one section)", "best baseline (pooled)", "pcc ratio", "ARI ours / knn (diff ± sd)",
              "targets"]
    rows, n_ok, n_rows = [], 0, 0
    for (dataset, section, protocol), rs in sorted(by.items(), key=lambda kv: (_ORDER.index(kv[0][2]), kv[0])):
        means = _method_means(rs)
        if ours not in means:
            continue
        mine = means[ours]
        base = {m: v for m, v in means.items() if m not in _NOT_BASELINES}
        if not base:
            continue
        pooled = {m: v for m, v in base.items() if m.endswith("+pooled")}
        alone = {m: v for m, v in base.items() if not m.endswith("+pooled")}
        best = max(base.items(), key=lambda kv: kv[1]["pcc"])
        ratio = mine["pcc"] / best[1]["pcc"] if best[1]["pcc"] > 0 else float("inf")
        misses = []
        if not ratio >= 1.2:
            misses.append(f"pcc {ratio:.2f}x {best[0]}")
        top = max(base.items(), key=lambda kv: kv[1]["pcc_top50"])
        if not mine["pcc_top50"] > top[1]["pcc_top50"]:
            misses.append(_miss(f"top50 <= {top[0]}", rs, ours, top[0], "pcc_top50"))
        low = min(base.items(), key=lambda kv: kv[1]["mse"])
        if not mine["mse"] < low[1]["mse"]:
            misses.append(_miss(f"mse >= {low[0]}", rs, ours, low[0], "mse", lower_is_better=True))
        if dataset == "her2st" and section.startswith("B4") and protocol == "G+" and "ridge+pooled" in base \
                and not mine["pcc"] > base["ridge+pooled"]["pcc"]:
            misses.append(_miss("pcc <= ridge+pooled", rs, ours, "ridge+pooled", "pcc"))
        ari = "-"
        if dataset == "dlpfc" and "knn" in base and np.isfinite(mine["ari"]):
            diff = _paired(rs, ours, "knn", "ari")
            sd = float(np.std(diff, ddof=1)) if len(diff) > 1 else 0.0
            ari = f"{mine['ari']:.3f} / {base['knn']['ari']:.3f} ({np.mean(diff):+.3f} ± {sd:.3f})"
            if np.mean(diff) < -sd:
                misses.append("ARI below knn by more than the seed spread")
        n_rows += 1
        n_ok += not misses

        def cell(group):
            if not group:
                return "-"
            m, v = max(group.items(), key=lambda kv: kv[1]["pcc"])
            return f"{v['pcc']:.3f} / {v['pcc_top50']:.3f} / {v['mse']:.4f} ({m})"

        w = means.get(without)
        rows.append([
            f"{dataset}/{section}", protocol, str(len({r["seed"] for r in rs})),
            f"{mine['pcc']:.3f} / {mine['pcc_top50']:.3f} / {mine['mse']:.4f}",
            f"{w['pcc']:.3f} / {w['pcc_top50']:.3f} / {w['mse']:.4f}" if w else "-",
            cell(alone), cell(pooled), f"{ratio:.2f}x", ari,
            "met" if not misses else "missed: " + ", ".join(misses),
        ])
    return [f"`{ours}` meets every target on {n_rows and n_ok} of {n_rows} rows (means over seeds; pcc ratio = "
            f"{ours} / the best baseline, pooled or not; a cell is pcc / pcc_top50 / MSE (the baseline with the best "
            "pcc of its group); a miss says on how many seeds it is also lost seed by seed).",
            "", *_table(header, rows)]


def _paired(recs: list[dict], ours: str, other: str, metric: str) -> list[float]:
    """Per seed, ``ours`` minus ``other`` on ``metric`` (seeds both have)."""
    mine = {r["seed"]: r.get(metric) for r in recs if r["method"] == ours}
    theirs = {r["seed"]: r.get(metric) for r in recs if r["method"] == other}
    return [mine[s] - theirs[s] for s in sorted(mine) if s in theirs and mine[s] is not None
            and theirs[s] is not None]


def _miss(text: str, recs: list[dict], ours: str, other: str, metric: str, *, lower_is_better: bool = False,
          strict: bool = True) -> str:
    """A missed target, with on how many seeds it is also lost seed by seed (when there are several):
    a mean can miss by 0.001 on one bad seed, or on every seed."""
    lost, compared = _seeds_lost(recs, ours, other, metric, lower_is_better, strict)
    return f"{text} ({lost} of {compared} seeds)" if compared > 1 else text


def _seeds_lost(recs: list[dict], ours: str, other: str, metric: str, lower_is_better: bool, strict: bool
                ) -> tuple[int, int]:
    """(seeds on which ``ours`` fails the target against ``other`` on ``metric``, seeds compared).

    ``strict``: the target asks for strictly better (pcc), otherwise at least as good (MSE, ARI).
    """
    mine = {r["seed"]: r.get(metric) for r in recs if r["method"] == ours}
    theirs = {r["seed"]: r.get(metric) for r in recs if r["method"] == other}
    seeds = [s for s in mine if s in theirs and mine[s] is not None and theirs[s] is not None]
    lost = 0
    for seed in seeds:
        a, b = (-mine[seed], -theirs[seed]) if lower_is_better else (mine[seed], theirs[seed])
        lost += not (a > b if strict else a >= b)
    return lost, len(seeds)


def inflated(records: list[dict]) -> list[str]:
    """Protocol R scored the paper's way (all spots, training spots included) next to held-out."""
    recs = [r for r in records if r["protocol"] == "R" and "pcc_all_spots_inflated" in r]
    if not recs:
        return []
    header = [
        "section",
        "method",
        "pcc held-out",
        "pcc all spots (INFLATED)",
        "pcc_top50 held-out",
        "pcc_top50 all spots (INFLATED)",
    ]
    rows = []
    by = _group(recs, "dataset", "section", "method")
    for (dataset, section, method), rs in sorted(
        by.items(), key=lambda kv: (kv[0][0], kv[0][1], _order([m for (_, _, m) in by]).index(kv[0][2]))
    ):
        rows.append(
            [
                f"{dataset}/{section}",
                method,
                _fmt([r["pcc"] for r in rs], 3),
                _fmt([r["pcc_all_spots_inflated"] for r in rs], 3),
                _fmt([r["pcc_top50"] for r in rs], 3),
                _fmt([r["pcc_top50_all_spots_inflated"] for r in rs], 3),
            ]
        )
    return _table(header, rows)


# --------------------------------------------------------------------------------------------
# figures


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _pick(kept: dict, dataset: str) -> tuple | None:
    """The (section, protocol) to draw for ``dataset``: protocol G, else R, else X, first section
    whose HVGs hold one of the dataset's marker genes (else the first section)."""
    keys = [k for k in kept if kept[k]["section"].dataset == dataset]
    markers = MARKERS.get(dataset, ())
    ordered = sorted(keys, key=lambda k: ("GRX".index(k[1]) if k[1] in "GRX" else 3, k[0]))
    with_marker = [k for k in ordered if any(g in kept[k]["genes"] for g in markers)]
    return (with_marker or ordered or [None])[0]


#: Figures are kept below this size (they are committed next to the report).
MAX_PNG_BYTES = 290_000


def _write_small_png(image, path: Path) -> None:
    """Write a PIL image as a palette PNG (plots have few colours), halving it until small enough."""
    from PIL import Image

    img = image.convert("RGB")
    while True:
        buf = io.BytesIO()
        img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(buf, format="png", optimize=True)
        if buf.tell() <= MAX_PNG_BYTES or min(img.size) < 200:
            break
        img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _save_png(fig, path: Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=72, format="png")
    buf.seek(0)
    _write_small_png(Image.open(buf), path)


def _scatter(ax, xy, values, vmin, vmax, size, title):
    ax.scatter(xy[:, 0], xy[:, 1], c=values, s=size, vmin=vmin, vmax=vmax, cmap="viridis", linewidths=0)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_yticks([])


def marker_figure(entry: dict, path: Path) -> list[str] | None:
    """Rows: marker genes; columns: measured, then each method, on the scored spots."""
    sec, split, genes = entry["section"], entry["split"], entry["genes"]
    markers = [g for g in MARKERS.get(sec.dataset, ()) if g in genes]
    if not markers:
        return None
    plt = _plt()
    methods = _order(entry["pred"])
    test = split.test
    xy = sec.xy[test]
    size = max(1.0, 3000.0 / max(len(test), 1))
    fig, axes = plt.subplots(
        len(markers), len(methods) + 1, figsize=(1.7 * (len(methods) + 1), 1.9 * len(markers)), squeeze=False
    )
    for i, gene in enumerate(markers):
        j = genes.index(gene)
        truth = entry["y"][test, j]
        vmin, vmax = np.percentile(truth, [1, 99])
        _scatter(axes[i, 0], xy, truth, vmin, vmax, size, f"{gene} measured")
        for c, m in enumerate(methods, start=1):
            p = entry["pred"][m][test, j]
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.corrcoef(truth, p)[0, 1] if np.std(p) > 1e-9 and np.std(truth) > 1e-9 else float("nan")
            _scatter(axes[i, c], xy, p, vmin, vmax, size, f"{m} (r={r:.2f})")
    fig.suptitle(
        f"{sec.name}, protocol {split.protocol}: held-out spots, log1p expression "
        f"(colour scale of the measured values)",
        fontsize=9,
    )
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return markers


def _clusters(expression: np.ndarray, k: int, seed: int, n_pcs: int = 30) -> np.ndarray:
    """k-means labels with the settings of ``evaluate.domains_ari``, for drawing only
    (the ARI numbers come from ``evaluate.domains_ari`` itself)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    X = np.asarray(expression, np.float64)
    n_pcs = max(1, min(n_pcs, X.shape[0] - 1, X.shape[1]))
    pcs = PCA(n_components=n_pcs, random_state=seed).fit_transform(X - X.mean(0))
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(pcs)


def domains_figure(entry: dict, path: Path, seed: int = 0) -> bool:
    """Manual layers, k-means on measured expression, k-means on training + predicted spots per method."""
    sec, split = entry["section"], entry["split"]
    labels = sec.labels
    if labels is None or sec.dataset == "her2st":
        return False
    from sklearn.metrics import adjusted_rand_score

    plt = _plt()
    known = np.array([v is not None for v in labels])
    cats = sorted({v for v in labels if v is not None})
    k = len(cats)
    lab_idx = np.array([cats.index(v) if v is not None else -1 for v in labels])
    y = entry["y"]
    panels = [("manual layers", lab_idx, None)]
    measured = _clusters(y, k, seed)
    panels.append(("k-means, measured", measured, domains_ari(y, labels, seed=seed)))
    for m in _order(entry["pred"]):
        mixed = y.copy()
        mixed[split.test] = entry["pred"][m][split.test]
        cl = _clusters(mixed, k, seed)
        panels.append((f"{m}", cl, adjusted_rand_score(labels[known].astype(str), cl[known])))
    n = len(panels)
    ncol = min(n, 4)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.4 * ncol, 2.5 * nrow), squeeze=False)
    xy = sec.xy
    size = max(1.0, 3000.0 / sec.n)
    for ax, (title, lab, ari) in zip(axes.flat, panels, strict=False):
        ok = lab >= 0
        ax.scatter(xy[ok, 0], xy[ok, 1], c=lab[ok], s=size, cmap="tab10", vmin=0, vmax=9, linewidths=0)
        ax.set_title(title if ari is None else f"{title} (ARI {ari:.2f})", fontsize=8)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    what = (
        "training spots measured + held-out spots predicted"
        if split.protocol != "X"
        else "every spot predicted from other sections"
    )
    fig.suptitle(f"{sec.name}, protocol {split.protocol}: spatial domains (k-means, k={k}); {what}", fontsize=9)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------


def _caption(png: Path) -> str:
    """The report's caption of a figure, from its file name (``markers_<dataset>_<section>_<P>.png``)."""
    kind, rest = png.stem.split("_", 1)
    name, protocol = rest.rsplit("_", 1)
    section = name.replace("_", "/", 1)
    if kind == "figure5":
        from .report_domains import caption

        return caption(section, protocol)
    if kind == "markers":
        return (
            f"Marker genes on {section}, protocol {protocol}, held-out spots: measured (left), each "
            "method's prediction (r: Pearson over these spots), on the colour scale of the measured values."
        )
    return (
        f"Spatial domains on {section}, protocol {protocol}: manual layers, k-means on the measured "
        "expression, and k-means on training spots (measured) + held-out spots (predicted) for each method."
    )


def draw_figures(kept: dict, out: Path) -> list[Path]:
    """Marker-gene and spatial-domain PNGs, one section per dataset, from kept predictions."""
    written: list[Path] = []
    for dataset in ("dlpfc", "her2st"):
        key = _pick(kept, dataset)
        if key is None:
            continue
        entry = kept[key]
        stem = f"{entry['section'].name.replace('/', '_')}_{key[1]}"
        png = out / f"markers_{stem}.png"
        if marker_figure(entry, png):
            written.append(png)
        png = out / f"domains_{stem}.png"
        if domains_figure(entry, png):
            written.append(png)
    return written


def write_report(
    records: list[dict],
    out: str | os.PathLike,
    *,
    kept: dict | None = None,
    meta: dict | None = None,
    figures: list[Path] | None = None,
) -> list[Path]:
    """Write ``out/report.md`` and, from ``kept`` predictions, its PNGs; ``figures`` are PNGs already in
    ``out`` to show as well. Returns the paths written."""
    out = Path(out)
    meta = meta or {}
    written = draw_figures(kept, out) if kept else []
    if kept:  # the paper's Figure 5: k-means and STAGATE domain maps (report_domains)
        from .report_domains import draw as draw_domain_maps

        written += draw_domain_maps(kept, out, _order, seed=(meta.get("seeds") or [0])[0])
    figs: list[str] = []
    for png in [*written, *(figures or [])]:
        figs += [f"![{png.stem}]({png.name})", "", _caption(png), ""]
    methods = _order(r["method"] for r in records)
    board = scoreboard(records)
    prior_board = prior_scoreboard(records)
    lines = [
        "# Benchmark: held-out spatial expression from H&E",
        "",
        "Generated by `histosge bench` (`histosge.benchmark.run`); the numbers are in `results.json`.",
        f"Encoder: `{meta.get('encoder', '?')}`. Methods: {', '.join(methods)}. "
        f"Seeds: {', '.join(map(str, meta.get('seeds', [])))}. "
        + (
            "Wall time: see Runs below (a part was interrupted)"
            if any(p.get("interrupted") for p in meta.get("parts", []))
            else f"Wall time: {meta.get('seconds_total', float('nan')):.0f} s "
            f"(features {meta.get('seconds_features', float('nan')):.0f} s)"
            + (", summed over the runs listed at the end" if meta.get("parts") else "")
        )
        + _machine(meta)
        + f"{' (QUICK run: few epochs, not a measurement)' if meta.get('quick') else ''}.",
        "",
        "All scores are on spots the model never trained on: pcc = mean per-gene Pearson over the "
        f"{records[0]['n_genes'] if records else 1000} HVGs (seurat_v3 on the training spots; genes constant "
        "on the scored spots count as 0), pcc_top50 = over the 50 most variable of them on the scored spots, "
        "mse/mae of log1p(normalize_total 1e4). 'mean' predicts the training mean, so its pcc is 0 by "
        "construction. ARI: k-means (k = number of labelled domains) on PCA of training spots (measured) + "
        "held-out spots (predicted) against the labels. DLPFC labels are the manual cortical layers; her2st "
        "labels are the authors' clusters *of expression*, so an ARI there says how well a method reproduces "
        "expression clusters, not histology.",
        "",
        "## Summary (mean over the sections of each dataset)",
        "",
        *summary(records),
        *(["", "## Is histosge first? (the targets of issue 5, row by row)", "", *board] if board else []),
        *(["", "## With a cohort: histosge with a prior (the targets of issue 16, row by row)", "", *prior_board]
          if prior_board else []),
        *tables(records),
        *_domain_section(records, meta),
    ]
    if "histosge-paper" not in methods:
        lines += [
            "",
            "The paper's own model and schedule ('histosge-paper', 1000 fixed epochs) is not in this run: "
            "it does not fit the time budget of the default suite on a CPU. It stays selectable "
            "(`--methods histosge-paper`); see docs/BENCHMARK.md for where its numbers are.",
        ]
    inf = inflated(records)
    if inf:
        lines += [
            "",
            "## The paper's way of scoring (INFLATED, shown once for comparison)",
            "",
            "The HisToSGE paper reports Pearson over all spots, the ones the model trained on included. "
            "Here the same protocol-R fits are scored that way: training spots are predicted almost "
            "perfectly by methods that can memorise them (knn returns a training spot's own value), which "
            "is what lifts the numbers. These are **not** held-out scores; do not quote them as such.",
            "",
            *inf,
        ]
    if figs:
        lines += ["", "## Figures", "", *figs]
    if meta.get("parts"):
        lines += ["", "## Runs", "", "This report combines runs made separately (`report.merge`):", ""]
        lines += [
            f"- `{p['out']}`: {', '.join(p['sections'])}; protocols {','.join(p['protocols'])}; "
            + ("INTERRUPTED: only the blocks it finished" if p.get("interrupted") else f"{p['seconds_total']:.0f} s")
            for p in meta["parts"]
        ]
    report_path = out / "report.md"
    with atomic_path(report_path) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n")
    return [report_path, *written]


def _domain_section(records: list[dict], meta: dict) -> list[str]:
    from .report_domains import section

    return section(records, meta, _order)


def merge(parts: list[str | os.PathLike], out: str | os.PathLike) -> list[Path]:
    """Combine benchmark outputs made separately (other sections or protocols, other machines) into
    ``out``: results.json concatenated, run.json listing the parts, their PNGs copied, report.md."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    metas: list[dict] = []
    figures: list[Path] = []
    seen: set = set()
    for part in map(Path, parts):
        recs = json.loads((part / "results.json").read_text())
        for r in recs:  # a block measured twice: the first part's record wins
            key = (r["dataset"], r["section"], r["protocol"], r["seed"], r["method"], r.get("prior_from"))
            if key not in seen:
                seen.add(key)
                records.append(r)
        if (part / "run.json").exists():
            meta = json.loads((part / "run.json").read_text())
        else:  # interrupted before its end: what its records say
            meta = {
                "interrupted": True,
                "seconds_total": float("nan"),
                "seconds_features": float("nan"),
                "sections": sorted({f"{r['dataset']}/{r['section']}" for r in recs}),
                "protocols": sorted({r["protocol"] for r in recs}),
                "seeds": sorted({r["seed"] for r in recs}),
                "encoder": recs[0]["encoder"] if recs else None,
            }
        metas += meta["parts"] if "parts" in meta else [{**meta, "out": str(part)}]  # a merge of merges
        for png in sorted(part.glob("*.png")):
            if out.resolve() != part.resolve():
                from PIL import Image

                with Image.open(png) as im:
                    _write_small_png(im, out / png.name)
            if out / png.name not in figures:
                figures.append(out / png.name)
    meta = {
        "encoder": metas[0].get("encoder"),
        "seeds": sorted({s for m in metas for s in m.get("seeds", [])}),
        "seconds_total": float(np.nansum([m["seconds_total"] for m in metas])),
        "seconds_features": float(np.nansum([m["seconds_features"] for m in metas])),
        "parts": metas,
    }
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(records, indent=1) + "\n")
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    order = {"markers": 0, "domains": 1, "figure5": 2}
    figures.sort(key=lambda p: (p.stem.split("_")[1] != "dlpfc", order.get(p.stem.split("_")[0], 2), p.name))
    return [out / "results.json", out / "run.json", *write_report(records, out, meta=meta, figures=figures)]


def _machine(meta: dict) -> str:
    """The machine the run recorded (never the one rendering the report)."""
    env = meta.get("environment") or {}
    if env.get("cpu_cores"):
        return f" on {env['cpu_cores']} CPU cores ({env.get('cpu', 'CPU')})"
    return ""
