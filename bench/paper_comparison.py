"""The HisToSGE paper's comparison on DLPFC and her2st, held-out (issues 18 and 29).

Issue 29, the whole comparison trained by the one early-stop rule (``histosge.model.early_stop``),
one torch thread per core, not ``--quick``, into ``bench/results/benchmark_paper_full/``:

    python bench/paper_comparison.py full --estimate   # the plan and its time from baseline_epoch_cost.json
    python bench/paper_comparison.py full              # every part of FULL_PLAN (each a histosge bench run)
    python bench/paper_comparison.py full-domains      # STAGATE, STMask on the saved predictions (FULL_DOMAINS)
                                                       # (--only stagate, --sections dlpfc/151673, --protocols R,
                                                       # --methods measured,histosge: a share)
    python bench/paper_comparison.py full-merge        # results.jsonl, report.md, figure5_ari_<section>.png
    python bench/paper_comparison.py spread stagate dlpfc/151673 R measured 1,2   # the clusterer's own seed spread
    python bench/paper_comparison.py full-table        # the README's tables of it

``full`` runs the parts one after another and skips a part whose folder already holds a finished
run (``run.json`` with ``seconds_total``) and goes on with an interrupted one where it stopped (``bench
--resume``: the tasks finished are kept), so it can be resumed; ``--only NAME`` runs one part.
STAGATE and STMask are not refitted with the methods: ``full-domains`` clusters the expression
each method left in the first seed's saved predictions (training spots measured, held-out spots
predicted, exactly what ``histosge bench --domains stagate,stmask`` clusters) and folds
``ari_stagate`` and ``ari_stmask`` into the records. Which part runs which methods on which
sections, and why, is ``FULL_PLAN``.

Issue 18's runs (k-means and STAGATE on seed 0, merged below):

The runs (each a plain ``histosge bench``; parts because STAGATE is slow on a CPU):

    M=mean,knn,ridge,stnet,histogene,deepspace,histosge
    histosge bench --data ../shared/data --out bench/results/benchmark_paper_comparison/parts/kmeans \\
        --sections dlpfc/151673,dlpfc/151676 --protocols R,G --methods $M --seeds 0,1,2
    for s in 151673 151676; do for p in R G; do
      histosge bench --data ../shared/data --out bench/results/benchmark_paper_comparison/parts/stagate_${s}_$p \\
          --sections dlpfc/$s --protocols $p --methods knn,stnet,histogene,deepspace,histosge --seeds 0 \\
          --domains kmeans,stagate
    done; done

On a busy 2-core machine one STAGATE clustering of a DLPFC section takes hours, and a
``histosge bench`` run does them one after another. ``stagate`` does one (section, protocol,
seed, method) in its own process, so several run side by side; it makes the same calls as the
benchmark (``benchmark.run_method`` on the same Task, then ``domains.cluster``) and writes
``parts/stagate_one/<section>_<protocol>_<seed>_<method>.json`` (method 'measured': the measured
expression) with the labels, which ``merge`` folds into the matching records (twin-checked)
and draws as domain maps:

    python bench/paper_comparison.py stagate dlpfc/151673 R 0 histogene

then

    python bench/paper_comparison.py merge    # -> bench/results/benchmark_paper_comparison/{results.jsonl,report.md}
    python bench/paper_comparison.py table    # the README's table

``merge`` takes the STAGATE parts first, so their seed-0 records (which carry ``ari_stagate``)
stand for that seed, and checks that every record measured twice agrees with its twin on every
score (a refit must reproduce: histogene to 1e-4 relative, everything else exactly); ``table``
prints ``comparison_table`` of the merged results (the README's table). Parts that are missing (a run
not finished) are skipped and named.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path("bench/results/benchmark_paper_comparison")
STAGATE_PARTS = ("stagate_151673_R", "stagate_151676_R", "stagate_151673_G", "stagate_151676_G")
METHODS = ("histosge", "knn", "ridge", "stnet", "histogene", "deepspace", "stage", "thitogene", "mean")
SCORES = ("pcc", "pcc_top50", "mse", "mae", "ari", "ari_measured")


def _key(r: dict) -> tuple:
    return (r["dataset"], r["section"], r["protocol"], r["seed"], r["method"])


def check_twins(parts: list[Path]) -> list[str]:
    """Records measured in more than one part that disagree on a score."""
    from histosge.benchmark.results import load_records

    seen: dict = {}
    problems = []
    for part in parts:
        for r in load_records(part):
            k = _key(r)
            if k in seen:
                rel = 1e-4 if r["method"] == "histogene" else 0.0
                for s in SCORES:
                    a, b = seen[k].get(s), r.get(s)
                    same = a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=rel, abs_tol=0))
                    if not same:
                        problems.append(f"{k} {s}: {a} vs {b} ({part.name})")
            else:
                seen[k] = r
    return problems


ONE = ROOT / "parts" / "stagate_one"


def stagate_one(name: str, protocol: str, seed: int, method: str, data: str) -> Path:
    """One STAGATE clustering (and its k-means twin) of ``method``'s expression, as the benchmark does it."""
    import time

    from histosge.benchmark import Task, ari, deterministic, load_sections, run_method
    from histosge.benchmark import domains as D
    from histosge.benchmark import protocols as P
    from histosge.evaluate import score

    sec = load_sections([name], data, progress=False)[name]
    split = P.get_protocol(protocol).split(sec.n, sec.rows, sec.cols, sec.grid, seed)
    _, _, y = P.within_section_genes(sec.adata, split.train)
    k = D.n_domains(sec.labels)
    rec = {"dataset": sec.dataset, "section": sec.section, "protocol": protocol, "seed": seed, "method": method}
    with deterministic(1):
        if method == "measured":
            expression = y
            rec["ari_measured"] = ari(y, sec.labels, seed)
        else:
            task = Task(sec.spots(split.train), y[split.train], sec.spots(np.arange(sec.n)), seed=seed, grid=sec.grid)
            pred, info, secs = run_method(method, task)
            rec.update({**score(y[split.test], pred[split.test]), "fit_seconds": secs})
            rec.pop("n_spots", None)
            expression = y.copy()
            expression[split.test] = pred[split.test]
            rec["ari"] = ari(expression, sec.labels, seed)
        t = time.perf_counter()
        stagate = D.cluster("stagate", expression, sec.xy, k, seed)
        rec["stagate_seconds"] = time.perf_counter() - t
        rec["ari_stagate"] = D.ari(sec.labels, stagate)
        rec["labels_stagate"] = stagate.tolist()
        rec["labels_kmeans"] = D.kmeans(expression, k, seed).tolist()
    ONE.mkdir(parents=True, exist_ok=True)
    path = ONE / f"{sec.section}_{protocol}_{seed}_{method}.json"
    path.write_text(json.dumps(rec) + "\n")
    return path


def fold_one(records: list[dict]) -> list[str]:
    """Put the ``stagate_one`` results into ``records`` (in place); returns twin mismatches."""
    problems = []
    for path in sorted(ONE.glob("*.json")) if ONE.exists() else []:
        one = json.loads(path.read_text())
        same = [r for r in records if (r["dataset"], r["section"], r["protocol"], r["seed"])
                == (one["dataset"], one["section"], one["protocol"], one["seed"])]
        if one["method"] == "measured":
            for r in same:
                r["ari_measured_stagate"] = one["ari_stagate"]
                r["stagate_measured_seconds"] = one["stagate_seconds"]
            continue
        twin = [r for r in same if r["method"] == one["method"]]
        if not twin:
            problems.append(f"{path.name}: no benchmark record to fold into")
            continue
        rel = 1e-4 if one["method"] == "histogene" else 0.0
        for s in ("pcc", "pcc_top50", "mse", "mae", "ari"):
            if not math.isclose(twin[0][s], one[s], rel_tol=rel, abs_tol=0):
                problems.append(f"{path.name} {s}: {twin[0][s]} vs {one[s]}")
        twin[0]["ari_stagate"] = one["ari_stagate"]
        twin[0]["stagate_seconds"] = one["stagate_seconds"]
    return problems


def draw_one_maps() -> list[Path]:
    """A domain map per (section, protocol, seed) of the ``stagate_one`` results (first seed only)."""
    import os

    from histosge.benchmark import sections as S
    from histosge.benchmark.figures import draw_maps
    from histosge.benchmark.results import method_order

    groups: dict = {}
    for path in sorted(ONE.glob("*.json")) if ONE.exists() else []:
        one = json.loads(path.read_text())
        groups.setdefault((one["dataset"], one["section"], one["protocol"], one["seed"]), {})[one["method"]] = one
    written = []
    firsts = {}
    for key in sorted(groups):
        firsts.setdefault(key[:3], key[3])
    for (dataset, section, protocol, seed), ones in sorted(groups.items()):
        if firsts[(dataset, section, protocol)] != seed or "measured" not in ones:
            continue
        name = f"{dataset}/{section}"
        adata = S.read(name, os.environ.get("HISTOSGE_DATA", "../shared/data"))
        sec = S.Section(name, adata, np.zeros((adata.n_obs, 1), np.float32), "")
        columns = ["measured", *method_order(m for m in ones if m != "measured")]
        grids = {c: {m: ones[m][f"labels_{c}"] for m in columns} for c in ("kmeans", "stagate")}
        k = len(set(ones["measured"]["labels_kmeans"]))
        path = ROOT / f"figure5_{dataset}_{section}_{protocol}.png"
        draw_maps(sec.xy, sec.labels, grids, f"{name}, protocol {protocol}, seed {seed}: spatial domains (k = {k}); "
                  "training spots measured + held-out spots predicted", path)
        written.append(path)
    return written


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


#: Record fields a comparison table can show, and their column names.
FIELDS = {"pcc": "pcc", "pcc_top50": "top-50 pcc", "ari": "ARI k-means", "ari_leiden": "ARI Leiden",
          "ari_stagate": "ARI STAGATE", "ari_stmask": "ARI STMask"}


def comparison_table(records: list[dict], methods, protocols=("R", "G"), fields=("pcc", "ari", "ari_stagate"),
                     sections=None) -> list[str]:
    """One row per method (and one for the measured expression): held-out pcc and the ARI of the
    clusterers (``fields``) per protocol, each the mean over the DLPFC sections (``sections``:
    those named 'dlpfc/151673', ...) and the seeds that have it ('not run' where none has); the
    highest of each column among methods in bold."""
    recs = [r for r in records if r.get("labels") == "manual annotation" and r["protocol"] in protocols
            and (sections is None or f"{r['dataset']}/{r['section']}" in sections)]
    if not recs:
        return []
    cols = [(p, f) for p in protocols for f in fields]
    values = {m: {c: _mean(r.get(c[1]) for r in recs if r["method"] == m and r["protocol"] == c[0]) for c in cols}
              for m in methods}
    best = {c: max((v[c] for v in values.values() if v[c] is not None), default=None) for c in cols}
    header = ["method", *[f"{p} {FIELDS[f]}" for p, f in cols]]
    rows = []
    measured = {f: f.replace("ari", "ari_measured", 1) for f in fields if f.startswith("ari")}
    row = ["(measured expression)"]
    for p, f in cols:
        v = _mean(r.get(measured[f]) for r in recs if r["protocol"] == p) if f in measured else None
        row.append("-" if f not in measured else ("not run" if v is None else f"{v:.3f}"))
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


FULL = Path("bench/results/benchmark_paper_full")
DLPFC = ("dlpfc/151673", "dlpfc/151676")
HER2ST = ("her2st/B4", "her2st/C2", "her2st/C3", "her2st/C4")
BASELINES = ("stage", "thitogene", "histogene", "deepspace", "stnet")
#: The parts of the issue-29 comparison: name -> histosge bench arguments. STAGE and THItoGene
#: run on one DLPFC section: on a 2-core CPU their published schedules (10,000 and 300 epochs) do
#: not fit the 2-hour budget twice (docs/BENCHMARK.md, "The paper's comparison, trained").
FULL_PLAN = {
    "dlpfc": {"sections": DLPFC, "protocols": ("R", "G"),
              "methods": ("histogene", "deepspace", "stnet", "histosge-paper", "histosge")},
    "her2st": {"sections": HER2ST, "protocols": ("R", "G"), "methods": BASELINES},
    "dlpfc_stage_thitogene": {"sections": DLPFC, "protocols": ("R", "G"), "methods": ("stage", "thitogene")},
}
#: Sections whose saved predictions ``full-domains`` clusters with each graph clusterer (one
#: clustering per method and task, and one of the measured expression: STAGATE 1000 and STMask 500
#: full-batch epochs each): STAGATE on both DLPFC sections (the issue's Figure 5), STMask, twice
#: STAGATE's cost, on 151673.
FULL_DOMAINS = {"stagate": DLPFC, "stmask": DLPFC[:1]}
GRAPH_CLUSTERERS = ("stagate", "stmask")
#: Epochs each method may run (the published counts: the rule stops inside them), for the estimate.
MAX_EPOCHS = {"stage": 10_000, "thitogene": 300, "histogene": 100, "deepspace": 50, "stnet": 100,
              "histosge-paper": 1000, "histosge": 300, "stagate": 1000, "stmask": 500}


def _finished(folder: Path) -> bool:
    meta = folder / "run.json"
    return meta.exists() and "seconds_total" in json.loads(meta.read_text())


def full(only: str | None, data: str) -> list[Path]:
    """Run the parts of ``FULL_PLAN`` (``only``: one of them) that have not finished."""
    from histosge.benchmark import cores, run

    done = []
    for name, kw in FULL_PLAN.items():
        folder = FULL / "parts" / name
        if (only and name != only) or _finished(folder):
            continue
        run(data, folder, sections=list(kw["sections"]), protocols=list(kw["protocols"]), methods=list(kw["methods"]),
            seeds=[0], domains=["kmeans", "leiden"], threads=cores(), resume=True)
        done.append(folder)
    return done


def full_domains(sections=DLPFC, threads: int | None = None, clusterers=GRAPH_CLUSTERERS,
                 protocols=("R", "G"), methods=None) -> list[Path]:
    """STAGATE and STMask domains of every saved first-seed task of ``sections`` in the parts: the
    measured expression and each method's (training spots measured, held-out spots predicted);
    written to ``parts/<part>/domains/<clusterer>_<section>_<protocol>_<method>.json``, skipped
    when already there (the measured expression of a task in two parts: once). ``methods``: only
    these ('measured' among them), in that order."""
    from histosge.benchmark import predictions as PR
    from histosge.datasets import split_name

    written = []
    for part in sorted((FULL / "parts").iterdir()) if (FULL / "parts").exists() else []:
        for entry in PR.index(part) if PR.exists(part) else []:
            s = PR.load(entry["path"])
            if (split_name(s.name) not in {split_name(n) for n in sections} or s.protocol not in protocols
                    or s.labels is None):
                continue
            for clusterer in clusterers:
                for method in [m for m in (methods or ["measured", *s.pred]) if m == "measured" or m in s.pred]:
                    out = part / "domains" / f"{clusterer}_{s.name.replace('/', '_')}_{s.protocol}_{method}.json"
                    if out.exists() or (method == "measured" and any(FULL.glob(f"parts/*/domains/{out.name}"))):
                        continue  # the measured expression of a task two parts share: clustered once
                    _cluster_into(out, clusterer, s, method, s.seed, threads, labels=True)
                    written.append(out)
    return written


def _cluster_into(out: Path, clusterer: str, s, method: str, seed: int, threads: int | None, labels: bool) -> None:
    """Cluster ``method``'s expression of saved task ``s`` (training spots measured, held-out spots
    predicted; 'measured': all measured) with ``seed``; its ARI, time (and labels) into ``out``."""
    import time

    from histosge.benchmark import cores, deterministic
    from histosge.benchmark import domains as D

    expression = s.y.copy()
    if method != "measured":
        expression[s.test] = s.pred[method]
    t = time.perf_counter()
    with deterministic(threads or cores()):
        lab = D.cluster(clusterer, expression, s.xy, D.n_domains(s.labels), seed)
    rec = {"clusterer": clusterer, "section": s.name, "protocol": s.protocol, "seed": seed, "method": method,
           "ari": D.ari(s.labels, lab), "seconds": time.perf_counter() - t}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**rec, "labels": lab.tolist()} if labels else rec) + "\n")
    print("wrote", out, flush=True)


def clusterer_spread(clusterer: str, section: str, protocol: str, method: str, seeds, threads: int | None = None
                     ) -> list[dict]:
    """The clusterer's own spread: ``method``'s expression of the saved first-seed task (``full-domains``
    clusters it with seed 0) clustered again with each of ``seeds``, the split and predictions
    unchanged; one ``spread/<clusterer>_<section>_<protocol>_<method>_seed<k>.json`` each (skipped
    when there). Returns every seed's result, seed 0's from ``full-domains`` first when it exists."""

    from histosge.benchmark import predictions as PR
    from histosge.datasets import split_name

    stem = f"{clusterer}_{'_'.join(split_name(section))}_{protocol}_{method}"
    found = [json.loads(p.read_text()) for p in sorted(FULL.glob(f"parts/*/domains/{stem}.json"))][:1]
    for part in sorted((FULL / "parts").iterdir()):
        entries = [e for e in (PR.index(part) if PR.exists(part) else [])
                   if split_name(e["name"]) == split_name(section) and e["protocol"] == protocol
                   and (method == "measured" or method in e["methods"])]
        if not entries:
            continue
        s = PR.load(entries[0]["path"])
        for seed in seeds:
            out = FULL / "spread" / f"{stem}_seed{seed}.json"
            if not out.exists():
                _cluster_into(out, clusterer, s, method, seed, threads, labels=False)
            found.append(json.loads(out.read_text()))
        return found
    raise SystemExit(f"no saved task of {section} {protocol} with {method!r} under {FULL}/parts")


def full_merge() -> list[Path]:
    """Every part's records, with the STAGATE and STMask results folded in, into ``FULL``:
    results.jsonl, report.md and figure5_ari_<section>.png (``figures.ari_chart``, one per DLPFC section)."""
    from histosge.benchmark import results
    from histosge.benchmark.figures import ari_chart
    from histosge.datasets import split_name

    parts = [p for p in sorted((FULL / "parts").glob("*")) if results.path_of(p).exists()]
    written = results.combine(parts, FULL)
    records = results.load_records(FULL)
    for part in parts:
        for path in sorted((part / "domains").glob("*.json")):
            one = json.loads(path.read_text())
            c = one["clusterer"]
            for r in records:
                if (r["dataset"], r["section"], r["protocol"], r["seed"]) != (
                        *split_name(one["section"]), one["protocol"], one["seed"]):
                    continue
                if one["method"] == "measured":
                    r[f"ari_measured_{c}"], r[f"{c}_measured_seconds"] = one["ari"], one["seconds"]
                elif r["method"] == one["method"]:
                    r[f"ari_{c}"], r[f"{c}_seconds"] = one["ari"], one["seconds"]
    results.write(FULL, records)
    methods = [m for m in (*BASELINES, "histosge-paper", "histosge") if any(r["method"] == m for r in records)]
    for section in DLPFC:  # one chart per section: a method run on one section only is not averaged with none
        dataset, name = section.split("/")
        path = FULL / f"{CHART}{dataset}_{name}.png"
        if ari_chart([r for r in records if (r["dataset"], r["section"]) == (dataset, name)], path, methods=methods):
            written.append(path)
    return [*written, *render(FULL)]


#: The stem of the Figure-5 charts: a folder holding them is this comparison's (bench/scoreboard.py asks).
CHART = "figure5_ari_"


def render(folder: str | Path = FULL) -> list[Path]:
    """report.md of the comparison's folder: the benchmark report and its Figure-5 section."""
    from histosge.benchmark import report

    charts = sorted(p.name for p in Path(folder).glob(f"{CHART}*.png"))
    return report.render(folder, extra=(lambda records: _figure5_section(records, charts),))


def _figure5_section(records: list[dict], charts: list[str]) -> list[str]:
    """The report's section of the paper's comparison: the Figure-5-style charts and the tables."""
    lines = ["## The paper's comparison (Figure 5: spatial domains of each method's output)", "",
             "Held-out spots predicted, training spots measured, clustered by each clusterer; the measured "
             "expression is the reference. The paper scored spots that include the training spots.", ""]
    for name in charts:
        lines += [f"![{name[:-4]}]({name})", ""]
    return lines + _tables(records)


def her2st_table(records: list[dict], methods=BASELINES, protocols=("R", "G")) -> list[str]:
    """One row per her2st section: each method's held-out pcc per protocol (seed 0), the best in bold."""
    recs = [r for r in records if r["dataset"] == "her2st" and r["protocol"] in protocols and r["seed"] == 0]
    sections = sorted({r["section"] for r in recs})
    header = ["section", "protocol", *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for p in protocols:
        for sec in sections:
            got = {r["method"]: r["pcc"] for r in recs if r["section"] == sec and r["protocol"] == p}
            best = max(got.values(), default=None)
            cells = ["not run" if m not in got else (f"**{got[m]:.3f}**" if got[m] == best else f"{got[m]:.3f}")
                     for m in methods]
            lines.append(f"| {sec} | {p} | " + " | ".join(cells) + " |")
    return lines


def full_tables() -> list[str]:
    """The README's tables of the full comparison: each DLPFC section (pcc and the ARI of every
    clusterer, R and G) and the her2st rows."""
    from histosge.benchmark.results import load_records

    return _tables(load_records(FULL))


def _tables(records: list[dict]) -> list[str]:
    methods = [m for m in (*BASELINES, "histosge-paper", "histosge") if any(r["method"] == m for r in records)]
    lines = []
    for protocol in ("R", "G"):
        for section in DLPFC:
            table = comparison_table(records, methods, (protocol,), ("pcc", "ari", "ari_leiden", "ari_stagate",
                                                                      "ari_stmask"), sections=(section,))
            if table:
                lines += [f"{section}, protocol {protocol}:", "", *table, ""]
    return lines + ["her2st (held-out pcc):", "", *her2st_table(records)]


def estimate(cost_file: Path = Path("bench/results/baseline_epoch_cost.json")) -> list[str]:
    """The plan's time, each method at its published number of epochs (an upper bound: the rule
    stops earlier), from the measured seconds per epoch (one thread per core, the rule's validation
    included) of ``bench/baseline_epoch_cost.py``, scaled by training spots (DLPFC R: x1, G: x0.5;
    her2st from her2st/C2)."""
    cost = json.loads(cost_file.read_text())
    per: dict = {}
    for r in cost["records"]:
        run = r["runs"].get("new_cores_stop_rule") or r["runs"].get("cores")
        # a slope below 0 is timing noise (or a network that stops at once whatever the length: histosge's
        # correction on a small section): no cost per epoch
        per[(r["section"].split("/")[0], r["method"])] = (max(0.0, run["seconds_per_epoch"]), run["seconds_fixed"])
    lines, total = [], 0.0
    for name, kw in FULL_PLAN.items():
        secs = 0.0
        for section in kw["sections"]:
            dataset = section.split("/")[0]
            for protocol in kw["protocols"]:
                scale = 1.0 if protocol == "R" else 0.5
                for m in kw["methods"]:
                    s_epoch, fixed = per.get((dataset, m), (float("nan"), 0.0))
                    secs += fixed + scale * s_epoch * MAX_EPOCHS[m]
        lines.append(f"{name}: {secs / 3600:.2f} h at most")
        total += secs
    for c, sections in FULL_DOMAINS.items():
        n = sum(1 + sum(len(kw["methods"]) for kw in FULL_PLAN.values()
                        if sec in kw["sections"] and p in kw["protocols"])
                for sec in sections for p in ("R", "G"))  # the measured expression and each method's, per task
        s_epoch, fixed = per.get(("dlpfc", c), (float("nan"), 0.0))
        secs = n * (fixed + s_epoch * MAX_EPOCHS[c])
        lines.append(f"full-domains {c} ({', '.join(sections)}): {n} clusterings, {secs / 3600:.2f} h")
        total += secs
    lines.append(f"total: {total / 3600:.2f} h at most (cost file of {cost['meta']['date']}, "
                 f"{cost['meta']['cores']} cores)")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["full"]:
        import os

        if "--estimate" in argv:
            print("\n".join(estimate()))
            return 0
        only = argv[argv.index("--only") + 1] if "--only" in argv else None
        for path in full(only, os.environ.get("HISTOSGE_DATA", "../shared/data")):
            print("finished", path)
        return 0
    if argv[:1] == ["full-domains"]:  # [--only stagate|stmask] [--sections dlpfc/151673,...] [--protocols R]: a share
        only = argv[argv.index("--only") + 1] if "--only" in argv else None
        chosen = argv[argv.index("--sections") + 1].split(",") if "--sections" in argv else None
        protocols = tuple(argv[argv.index("--protocols") + 1].split(",")) if "--protocols" in argv else ("R", "G")
        methods = argv[argv.index("--methods") + 1].split(",") if "--methods" in argv else None
        for clusterer, sections in FULL_DOMAINS.items():
            if only in (None, clusterer):
                full_domains([s for s in sections if chosen is None or s in chosen], clusterers=(clusterer,),
                             protocols=protocols, methods=methods)
        return 0
    if argv[:1] == ["spread"] and len(argv) == 6:  # CLUSTERER SECTION PROTOCOL METHOD SEEDS (1,2)
        import numpy as np

        found = clusterer_spread(argv[1], argv[2], argv[3], argv[4], [int(k) for k in argv[5].split(",")])
        aris = [r["ari"] for r in found]
        by_seed = ", ".join(f"{r['seed']}: {r['ari']:.3f}" for r in found)
        sd = np.std(aris, ddof=1) if len(aris) > 1 else float("nan")
        print(f"{' '.join(argv[1:5])}: ARI by seed {by_seed}; mean {np.mean(aris):.3f}, sd {sd:.3f}")
        return 0
    if argv[:1] == ["full-merge"]:
        for path in full_merge():
            print("wrote", path)
        return 0
    if argv[:1] == ["merge"]:
        from histosge.benchmark import report, results

        names = [*STAGATE_PARTS, "kmeans"]
        parts = [ROOT / "parts" / n for n in names if results.path_of(ROOT / "parts" / n).exists()]
        missing = [n for n in names if not results.path_of(ROOT / "parts" / n).exists()]
        if missing:
            print(f"missing parts (skipped): {', '.join(missing)}")
        problems = check_twins(parts)
        written = results.combine(parts, ROOT)
        if ONE.exists():  # fold the one-at-a-time STAGATE results in, with their domain maps
            records = results.load_records(ROOT)
            problems += fold_one(records)
            results.write(ROOT, records)
            written += draw_one_maps()
        for path in [*written, *report.render(ROOT)]:
            print("wrote", path)
        for p in problems:
            print("MISMATCH", p)
        return 1 if problems else 0
    if argv[:1] == ["stagate"] and len(argv) == 5:
        import os

        data = os.environ.get("HISTOSGE_DATA", "../shared/data")
        print("wrote", stagate_one(argv[1], argv[2], int(argv[3]), argv[4], data))
        return 0
    if argv[:1] == ["full-table"]:
        if not (FULL / "results.jsonl").exists():
            print(f"{FULL}/results.jsonl is not here: run full, full-domains and full-merge first", file=sys.stderr)
            return 2
        print("\n".join(full_tables()))
        return 0
    if argv[:1] == ["table"]:
        from histosge.benchmark.results import load_records

        if not ROOT.exists():
            print(f"{ROOT} is not here (issue 18's runs, not committed): run the parts above, then merge",
                  file=sys.stderr)
            return 2
        print("\n".join(comparison_table(load_records(ROOT), METHODS)))
        return 0
    print("usage: python bench/paper_comparison.py full [--estimate] [--only PART]|full-domains|full-merge|full-table|"
          "merge|table|"
          "stagate SECTION PROTOCOL SEED METHOD|spread CLUSTERER SECTION PROTOCOL METHOD SEEDS",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
