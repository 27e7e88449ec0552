"""report.md of a benchmark folder, rendered from its files only (results, run.json, saved predictions).

So a report can be redrawn at any time, on any machine, and says what the run recorded: the
machine and settings come from run.json, the numbers from the results (mean ± sd over seeds, a
pandas group-by), the figures from ``predictions/``. Runs older than saved predictions keep the
PNGs they drew, and the report says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from .._atomic import atomic_path
from . import figures as F
from . import predictions as PR
from . import protocols as P
from . import results as RS
from .report_domains import section as domain_section
from .results import method_order

_TABLE_METRICS = ("pcc", "pcc_top50", "mse", "mae", "ari", "fit_seconds")
_DIGITS = {"mse": 4, "mae": 4, "fit_seconds": 1}

#: A section of the report computed from the records (markdown lines, its own heading included).
Extra = Callable[[list[dict]], list[str]]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _cell(agg: pd.Series, metric: str, digits: int) -> str:
    """mean ± sd of one aggregated metric ('-' without a finite value; no sd for one value)."""
    mean, sd, count = agg[(metric, "mean")], agg[(metric, "std")], agg[(metric, "count")]
    if not count:
        return "-"
    return f"{mean:.{digits}f}" if count == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def with_prior_labels(df: pd.DataFrame) -> pd.DataFrame:
    """R+ and G+ rows with the section named with its cohort ('C2 (same patient: C3+C4)'), so that
    the two cohorts of a section are two rows wherever rows are grouped by section."""
    df = df.copy()
    cohort = df["prior_from"].notna()
    if not cohort.any():
        return df
    df.loc[cohort, "section"] = [f"{s} ({p}: {'+'.join(srcs)})" for s, p, srcs in
                                 df.loc[cohort, ["section", "prior_from", "prior_sections"]].itertuples(index=False)]
    return df


def tables(df: pd.DataFrame) -> list[str]:
    """Per protocol and dataset, one row per section x method, mean ± sd over seeds."""
    lines: list[str] = []
    df = with_prior_labels(df)
    for proto in [p for p in P.protocols() if (df["protocol"] == p.name).any()]:  # registration order
        lines += ["", f"### {proto.title}", ""]
        recs = df[df["protocol"] == proto.name]
        for dataset in sorted(recs["dataset"].unique()):
            d = recs[recs["dataset"] == dataset]
            seeds = sorted(d["seed"].unique())
            lines += [f"**{dataset}** (seeds: {', '.join(map(str, seeds))}; held-out spots only)", ""]
            agg = RS.aggregate(d, ["section", "method"], _TABLE_METRICS)
            first = d.groupby(["section", "method"], sort=False).head(1).set_index(["section", "method"])
            rows = []
            for section in sorted(d["section"].unique()):
                for method in method_order(d.loc[d["section"] == section, "method"]):
                    r = first.loc[(section, method)]
                    tt = f"{r['n_train']}/{r['n_test']}"
                    if proto.cross:
                        src = r.get("train_sections")
                        tt = f"{'+'.join(src if isinstance(src, list) else [])} ({r['n_train']})/{r['n_test']}"
                    a = agg.loc[(section, method)]
                    rows.append([section, method, tt, *(_cell(a, m, _DIGITS.get(m, 3)) for m in _TABLE_METRICS)])
            lines += table(["section", "method", "train/test", "pcc", "pcc_top50", "mse", "mae", "ARI", "fit s"],
                           rows) + [""]
            if "ari_measured" in d and d["ari_measured"].notna().any():
                measured = d[d["ari_measured"].notna()]
                # the measured ARI repeats on every method's record: one method's, over its seeds
                one = measured[measured["method"] == measured.groupby("section")["method"].transform("first")]
                agg = RS.aggregate(one, ["section"], ["ari_measured"])
                ref = ", ".join(f"{s}: {_cell(agg.loc[s], 'ari_measured', 3)}" for s in sorted(agg.index))
                lines += [f"ARI of k-means on the *measured* expression (the ceiling for the ARI column): {ref}.", ""]
    return lines


def summary(df: pd.DataFrame) -> list[str]:
    """Mean held-out pcc over the sections of each dataset, one row per method (R+ and G+, whose
    rows differ in their cohort, are left out)."""
    df = df[~df["protocol"].isin([p.name for p in P.protocols() if p.cohort])]  # rows differ in their cohort
    if df.empty:
        return ["Only protocols with a cohort (R+, G+) in this run: their rows are in the tables below."]
    cols = sorted({(p, d) for p, d in zip(df["protocol"], df["dataset"], strict=True)},
                  key=lambda k: ([p.name for p in P.protocols()].index(k[0]), k[1]))
    means = RS.aggregate(df, ["method", "protocol", "dataset"], ["pcc", "pcc_top50"])
    rows = []
    for method in method_order(df["method"]):
        rows.append([method, *(f"{means.loc[(method, p, d), (metric, 'mean')]:.3f}" if (method, p, d) in means.index
                               else "n/a" for metric in ("pcc", "pcc_top50") for p, d in cols)])
    return table(["method", *(f"{p} {d} pcc" for p, d in cols), *(f"{p} {d} top50" for p, d in cols)], rows)


def inflated(df: pd.DataFrame) -> list[str]:
    """Protocol R scored the paper's way (all spots, training spots included) next to held-out."""
    if "pcc_all_spots_inflated" not in df:
        return []
    recs = df[(df["protocol"] == "R") & df["pcc_all_spots_inflated"].notna()]
    if recs.empty:
        return []
    metrics = ["pcc", "pcc_all_spots_inflated", "pcc_top50", "pcc_top50_all_spots_inflated"]
    agg = RS.aggregate(recs, ["dataset", "section", "method"], metrics)
    order = method_order(recs["method"])
    rows = [[f"{dataset}/{section}", method, *(_cell(agg.loc[(dataset, section, method)], m, 3) for m in metrics)]
            for dataset, section, method in sorted(agg.index, key=lambda k: (k[0], k[1], order.index(k[2])))]
    return table(["section", "method", "pcc held-out", "pcc all spots (INFLATED)", "pcc_top50 held-out",
                  "pcc_top50 all spots (INFLATED)"], rows)


def _machine(meta: dict) -> str:
    """The machine the run recorded (never the one rendering the report)."""
    env = meta.get("environment") or {}
    if env.get("cpu_cores"):
        return f" on {env['cpu_cores']} CPU cores ({env.get('cpu', 'CPU')})"
    return ""


def _wall_time(meta: dict) -> str:
    if any(p.get("interrupted") for p in meta.get("parts", [])):
        return "Wall time: see Runs below (a part was interrupted)"
    if "seconds_total" not in meta:
        return "Wall time: not recorded (the run did not finish)"
    return (f"Wall time: {meta['seconds_total']:.0f} s (features {meta.get('seconds_features', float('nan')):.0f} s)"
            + (", summed over the runs listed at the end" if meta.get("parts") else ""))


def load_meta(folder: str | os.PathLike) -> dict:
    """run.json of a benchmark folder ({} when there is none)."""
    path = Path(folder) / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def render(folder: str | os.PathLike, *, extra: Sequence[Extra] = ()) -> list[Path]:
    """Write ``folder/report.md`` (and its PNGs, from ``folder/predictions``) from the folder's files.

    ``extra``: more sections, each a function of the records returning markdown lines, placed after
    the summary (``bench/scoreboard.py`` adds the project's own targets this way). Returns the paths
    written."""
    folder = Path(folder)
    meta = load_meta(folder)
    records = RS.load_records(folder)
    df = RS.frame(records)
    written = F.draw(folder, list(meta.get("seeds") or [0])) if PR.exists(folder) else []
    figs: list[str] = []
    kept = []  # PNGs in the folder not drawn now: drawn when their run was made
    for png in F.in_folder(folder):
        figs += [f"![{png.stem}]({png.name})", "", F.caption(png), ""]
        kept += [] if png in written else [png.name]
    if kept and not meta.get("predictions"):  # from run.json, so the text is the same with or without the files
        figs += [("These figures were" if len(kept) == len(figs) // 4 else f"{', '.join(kept)} were")
                 + " drawn when the run was made; the run saved no predictions (`predictions/`) to draw them "
                 "again from.", ""]
    methods = method_order(df["method"])
    lines = [
        "# Benchmark: held-out spatial expression from H&E",
        "",
        f"Generated by `histosge bench` (`histosge.benchmark.run`); the numbers are in "
        f"`{RS.path_of(folder).name}`.",
        f"Encoder: `{meta.get('encoder', '?')}`. Methods: {', '.join(methods)}. "
        f"Seeds: {', '.join(map(str, meta.get('seeds', [])))}. " + _wall_time(meta) + _machine(meta)
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
        *summary(df),
    ]
    for section in extra:
        part = section(records)
        lines += ["", *part] if part else []
    lines += [*tables(df), *domain_section(records, meta)]
    if "histosge-paper" not in methods:
        lines += [
            "",
            "The paper's own model and schedule ('histosge-paper', 1000 fixed epochs) is not in this run: "
            "it does not fit the time budget of the default suite on a CPU. It stays selectable "
            "(`--methods histosge-paper`); see docs/BENCHMARK.md for where its numbers are.",
        ]
    inf = inflated(df)
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
        lines += ["", "## Runs", "", "This report combines runs made separately (`results.combine`):", ""]
        lines += [
            f"- `{p['out']}`: {', '.join(p['sections'])}; protocols {','.join(p['protocols'])}; "
            + ("INTERRUPTED: only the blocks it finished" if p.get("interrupted") else f"{p['seconds_total']:.0f} s")
            for p in meta["parts"]
        ]
    report_path = folder / "report.md"
    with atomic_path(report_path) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n")
    return [report_path, *written]

