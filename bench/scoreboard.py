"""The project's own scoreboard: is histosge first on every row of the benchmark? Rendered into report.md.

Why: the library's report (``histosge.benchmark.report``) is generic; the targets the project set
itself (issue 5 for R, G, X; issue 16 for R+, G+ with a cohort) live here, next to the README
tables that quote them. A row lists what it misses, so a loss cannot hide in a long table.

    python bench/scoreboard.py bench/results/benchmark [more folders]   # report.md with the scoreboard
    python bench/scoreboard.py --print bench/results/benchmark          # the scoreboard alone
    python bench/scoreboard.py --print --cohort bench/results/benchmark_prior

Means over seeds come from a pandas group-by of the folder's records (``histosge.benchmark.results``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from histosge.benchmark import report
from histosge.benchmark import results as RS
from histosge.benchmark.protocols import get_protocol, protocols

METRICS = ("pcc", "pcc_top50", "mse", "mae", "ari")
#: Protocols of the first scoreboard (R, G, X), and those of the cohort one.
TARGETS = ("R", "G", "X")
#: Methods that are not baselines in the cohort scoreboard (ours, and the mean's pcc of 0).
NOT_BASELINES = ("mean", "histosge", "histosge-paper", "histosge+prior")


def method_means(records: list[dict]) -> dict[str, dict[str, float]]:
    """method -> mean of each metric over ``records`` (its seeds), NaN where none has a finite value."""
    agg = RS.aggregate(RS.frame(records), ["method"], METRICS)
    return {method: {m: float(row[(m, "mean")]) for m in METRICS} for method, row in agg.iterrows()}


def groups(records: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """The records of each group of ``keys`` (groups sorted by protocol order, then key)."""
    df = RS.frame(records)
    out = {tuple(k): [records[i] for i in idx] for k, idx in df.groupby(list(keys), sort=False).indices.items()}
    return dict(sorted(out.items(), key=lambda kv: ([p.name for p in protocols()].index(kv[0][2]), kv[0])))


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


def _miss(text: str, recs: list[dict], ours: str, other: str, metric: str, *, lower_is_better: bool = False,
          strict: bool = True) -> str:
    """A missed target, with on how many seeds it is also lost seed by seed (when there are several):
    a mean can miss by 0.001 on one bad seed, or on every seed."""
    lost, compared = _seeds_lost(recs, ours, other, metric, lower_is_better, strict)
    return f"{text} ({lost} of {compared} seeds)" if compared > 1 else text


def _paired(recs: list[dict], ours: str, other: str, metric: str) -> list[float]:
    """Per seed, ``ours`` minus ``other`` on ``metric`` (seeds both have)."""
    mine = {r["seed"]: r.get(metric) for r in recs if r["method"] == ours}
    theirs = {r["seed"]: r.get(metric) for r in recs if r["method"] == other}
    return [mine[s] - theirs[s] for s in sorted(mine) if s in theirs and mine[s] is not None
            and theirs[s] is not None]


def scoreboard(records: list[dict], ours: str = "histosge") -> list[str]:
    """Is ``ours`` first on every row? Per section x protocol, means over seeds.

    The targets: R and G: a higher pcc and pcc_top50 than every other method and an MSE no worse
    than knn's; X: a higher pcc than ridge; DLPFC (manual layers): an ARI at least knn's.
    G9, G16, R+ and G+ are not among them.
    """
    if not any(r["method"] == ours for r in records):
        return []
    header = ["section", "protocol", "seeds", f"{ours} pcc / top50 / mse", "best other pcc", "best other top50",
              "knn mse", "ARI (ours / knn)", "first?"]
    rows, n_ok, n_rows = [], 0, 0
    by = groups([r for r in records if r["protocol"] in TARGETS], ("dataset", "section", "protocol"))
    for (dataset, section, protocol), recs in by.items():
        means = method_means(recs)
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
    return [f"`{ours}` meets every target on {n_ok} of {n_rows} rows (means over seeds). The targets: on R and G "
            "a higher pcc and pcc_top50 than every other method and an MSE no worse than knn's; on X a higher pcc "
            "than ridge; on DLPFC an ARI at least knn's. A miss says on how many seeds it is also lost seed by seed.",
            "", *report.table(header, rows)]


def prior_scoreboard(records: list[dict], ours: str = "histosge+prior", without: str = "histosge") -> list[str]:
    """The cohort's targets, row by row (protocols R+ and G+; a row is a section with one cohort):
    ``ours`` (with a prior) >= 1.2x the best baseline's pcc, with and without pooled spots, and
    first on pcc_top50 and MSE; on her2st B4 G+ ahead of ridge+pooled; on DLPFC an ARI at least
    knn's within the seed spread (the mean of the per-seed differences no worse than one
    standard deviation of them). ``without``: the same model without the prior, shown beside.
    Means over seeds."""
    recs = [r for r in records if get_protocol(r["protocol"]).cohort]
    if not any(r["method"] == ours for r in recs):
        return []
    labelled = RS.records(report.with_prior_labels(RS.frame(recs)))
    header = ["section (cohort)", "protocol", "seeds", f"{ours} pcc / top50 / mse", f"{without}",
              "best baseline (one section)", "best baseline (pooled)", "pcc ratio", "ARI ours / knn (diff ± sd)",
              "targets"]
    rows, n_ok, n_rows = [], 0, 0
    for (dataset, section, protocol), rs in groups(labelled, ("dataset", "section", "protocol")).items():
        means = method_means(rs)
        if ours not in means:
            continue
        mine = means[ours]
        base = {m: v for m, v in means.items() if m not in NOT_BASELINES}
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
            "", *report.table(header, rows)]


def section(records: list[dict]) -> list[str]:
    """The report's section for protocols R, G and X (empty without histosge)."""
    if not any(r["protocol"] in TARGETS for r in records):
        return []
    board = scoreboard(records)
    return ["## Is histosge first? (row by row)", "", *board] if board else []


def cohort_section(records: list[dict]) -> list[str]:
    """The report's section for R+ and G+ (empty without histosge+prior)."""
    board = prior_scoreboard(records)
    if not board:
        return []
    return ["## With a cohort: histosge with a prior (row by row)", "",
            "The targets: a pcc at least 1.2x the best baseline's (pooled or not), first on pcc_top50 and MSE, "
            "on her2st B4 G+ ahead of ridge+pooled, and on DLPFC an ARI at least knn's within the seed spread.",
            "", *board]


def render(folder: str | Path) -> list[Path]:
    """report.md of a benchmark folder with the project's scoreboards (``report.render`` + sections);
    the paper comparison's folder (it holds its Figure-5 charts) as bench/paper_comparison.py renders it."""
    if any(Path(folder).glob("figure5_ari_*.png")):
        import importlib.util

        path = Path(__file__).with_name("paper_comparison.py")
        spec = importlib.util.spec_from_file_location("paper_comparison", path)
        comparison = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(comparison)
        return comparison.render(folder)
    return report.render(folder, extra=(section, cohort_section))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    show, cohort = "--print" in argv, "--cohort" in argv
    folders = [a for a in argv if a not in ("--print", "--cohort")]
    if not folders:
        print("usage: python bench/scoreboard.py [--print [--cohort]] BENCHMARK_FOLDER...", file=sys.stderr)
        return 2
    for folder in folders:
        if show:
            records = RS.load_records(folder)
            print("\n".join(prior_scoreboard(records) if cohort else scoreboard(records)))
        else:
            for path in render(folder):
                print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
