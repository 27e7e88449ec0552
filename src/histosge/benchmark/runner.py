"""``run``: every task x method, scored on held-out spots; each record appended to results.jsonl as it finishes.

The run writes only files: run.json (settings and machine at the start, totals at the end),
results.jsonl (one record per fit), predictions/ (each first-seed task's predictions), and then
report.md rendered from them (``report.render``), so an interrupted run keeps what it finished
and a report can be drawn again later.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_path
from ..datasets import get_dataset, split_name
from ..errors import InputError
from ..evaluate import domains_ari, score
from ..genes import log_normalize
from ..model import Spots
from ..provenance import environment
from . import domains as D
from . import methods as M
from . import predictions as PR
from . import protocols as P
from . import results as RS
from . import sections as S
from .plan import BenchTask, plan

#: Protocols run by default (X is cheap next to R and G and fits the same budget).
DEFAULT_PROTOCOLS = tuple(p.name for p in P.protocols() if p.default)
DEFAULT_SEEDS = (0,)


@dataclass
class BenchResult:
    """What ``run`` measured: the records of results.jsonl, the splits used, and the files written.

    ``splits[(section, protocol, seed)]`` holds the spot indices (into the section as read) that
    trained and that were scored; for X the training spots come from other sections, so ``train``
    is empty and ``train_sections`` in the record names them.
    """

    records: list[dict]
    splits: dict[tuple[str, str, int], P.Split]
    out: Path
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


@contextlib.contextmanager
def deterministic(threads: int | None) -> Iterator[None]:
    """Deterministic torch kernels and a fixed thread count (results depend on neither run nor load):
    what ``run`` fits every method under, and what a bench/ script that re-fits them uses."""
    old = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    limits = contextlib.nullcontext()
    if threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(int(threads))
        limits = threadpool_limits(int(threads))  # BLAS/OpenMP of numpy and scikit-learn
    try:
        with limits:
            yield
    finally:
        torch.use_deterministic_algorithms(old, warn_only=old_warn)
        torch.set_num_threads(old_threads)


def _parse(values, allowed: Sequence[str] | None, what: str) -> list[str]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    values = [str(v).strip() for v in values]
    if allowed is not None:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise InputError(
                f"unknown {what} {', '.join(bad)}",
                where=f"--{what}s",
                fix=f"choose from {', '.join(allowed)}",
            )
    if not values:
        raise InputError(f"no {what} given", where=f"--{what}s", fix=f"name at least one {what}")
    return values


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, flush=True)


def run(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sections: Sequence[str] | str | None = None,
    protocols: Sequence[str] | str = DEFAULT_PROTOCOLS,
    methods: Sequence[str] | str = M.DEFAULT_METHODS,
    seeds: Sequence[int] | str = DEFAULT_SEEDS,
    encoder: str | None = None,
    quick: bool = False,
    cache_dir: str | os.PathLike | None = None,
    n_genes=P.N_GENES,
    threads: int | None = 1,
    report: bool = True,
    progress: bool = True,
    domains: Sequence[str] | str = ("kmeans",),
    resume: bool = False,
) -> BenchResult:
    """Benchmark ``methods`` on ``sections`` of ``data_dir`` under ``protocols``; write ``out``/.

    - ``sections``: names like 'dlpfc:151673' (or 'dlpfc/151673'); default: all found in ``data_dir``.
    - ``protocols``: 'R' (random half held out), 'G' (4x generation), 'X' (cross-section);
      also 'G9', 'G16' (9x, 16x generation) and 'R+', 'G+' (R and G with the other sections of
      the dataset known: a prior for histosge, pooled spots for the baselines); not in the default.
    - ``methods``: see ``methods.ALL_METHODS``; default ``methods.DEFAULT_METHODS``.
    - ``seeds``: one run per seed (splits of R and every model's initialisation).
    - ``encoder``: image encoder name (default ``histosge.encode.DEFAULT_ENCODER``).
    - ``quick``: few epochs, and unless ``sections`` are named only one small section (the first
      of a dataset with ``small_sections``: her2st): a smoke test in < 2 minutes, not a measurement.
    - ``cache_dir``: feature cache (default: the encoder module's, ``~/.cache/histosge/features``).
    - ``n_genes``: the HVGs of each task's training spots, or a ``genes.GeneChoice`` (genes
      named to be predicted in every task besides the HVGs, ``all_genes``); named genes every
      section must measure (checked before any fit).
    - ``threads``: torch CPU threads while fitting (default 1: on a shared 2-core machine two
      threads ran small models ~10x slower than one; None keeps torch's setting).
    - ``domains``: clusterers of the spatial domains, 'kmeans' (always run: the ``ari`` field),
      'leiden' and 'stagate' (``benchmark.domains``; fields ``ari_<clusterer>`` and
      ``ari_measured_<clusterer>`` on sections with labels; STAGATE takes minutes per clustering
      on a CPU, so neither is in the default). Without igraph (Leiden) or the 'domains' extra
      (STAGATE) that clusterer is skipped and run.json (``<clusterer>_skipped``) says why.
    - ``resume``: go on with an interrupted run in ``out`` (same settings, checked): the tasks whose
      records (and, for the first seed, predictions) are all there are not fitted again; a task
      left half done is fitted again from the start (its partial records dropped).

    Writes ``out/run.json`` (the settings and machine, at the start; the times, at the end),
    ``out/results.jsonl`` (one record per section x protocol x seed x method, appended as each
    fit finishes), ``out/predictions/`` (the first seed's predictions of every task, for the
    figures) and, with ``report``, ``out/report.md`` and its PNGs rendered from those files.
    Scores are on held-out spots only, except the fields ending in ``_all_spots_inflated``
    (protocol R, training spots included, as the paper scored). Returns a :class:`BenchResult`.
    """
    t_start = time.perf_counter()
    out = Path(out)
    protocols = _parse(protocols, [p.name for p in P.protocols()], "protocol")
    methods = _parse(methods, M.ALL_METHODS, "method")
    clusterers = _parse(domains, D.CLUSTERERS, "domain")
    why_not = {c: D.missing(c) for c in clusterers if c != "kmeans"}
    for c, reason in why_not.items():
        if reason:
            _log(progress, f"bench: {c} skipped: {reason}")
    extra = [c for c in D.CLUSTERERS if c in clusterers and c != "kmeans" and not why_not[c]]
    try:
        seeds = [int(s) for s in _parse(seeds, None, "seed")]
    except ValueError as err:
        raise InputError(f"seeds must be integers ({err})", where="--seeds", fix="e.g. --seeds 0,1,2") from None
    names = [S.normalise_name(n) for n in _parse(sections, None, "section")] if sections else S.discover(data_dir)
    if quick and not sections:  # one small section (datasets.Dataset.small_sections: legacy ST, a few hundred spots)
        names = sorted(names, key=lambda n: not getattr(get_dataset(split_name(n)[0]), "small_sections", False))[:1]
        protocols = [p for p in protocols if not P.get_protocol(p).cross] or ["R"]
    not_run = [m for m in methods if not any(M.valid_for(m, p) for p in protocols)]
    methods = [m for m in methods if m not in not_run]  # listed and recorded: only what this run runs
    if not methods:
        raise InputError(f"none of the methods runs under protocols {','.join(protocols)} "
                         f"({', '.join(not_run)} need R+ or G+)", where="--methods",
                         fix="add --protocols R+,G+ or choose other methods")
    from ..encode import DEFAULT_ENCODER

    meta = {
        "quick": quick,
        "sections": names,
        "protocols": protocols,
        "methods": methods,
        **({"methods_not_run": not_run} if not_run else {}),
        "seeds": seeds,
        "encoder": encoder or DEFAULT_ENCODER,
        "n_genes": n_genes if isinstance(n_genes, int) else n_genes.record(),
        "torch_threads": threads or torch.get_num_threads(),
        "environment": environment(),  # package versions, CPU, BLAS: what the numbers depend on
        "domains": ["kmeans", *extra],
        **{f"{c}_skipped": reason for c, reason in why_not.items() if reason},
        "predictions": PR.FOLDER,  # the first seed's, for the figures (not committed: large)
    }
    done_records = _resumable(out, meta) if resume else None
    if done_records is None:
        _start(out, meta)
    else:
        with atomic_path(out / "run.json") as tmp:  # unfinished again until this run ends
            tmp.write_text(json.dumps(meta, indent=1) + "\n")
    _log(
        progress,
        f"bench: {len(names)} sections, protocols {','.join(protocols)}, methods {','.join(methods)}, "
        f"seeds {','.join(map(str, seeds))}{' (quick)' if quick else ''}",
    )
    if not_run:
        _log(progress, f"bench: not run under {','.join(protocols)}: {', '.join(not_run)} (they read the other "
                       "sections: protocols R+ and G+)")
    t0 = time.perf_counter()
    secs = S.load(names, data_dir, encoder=encoder, cache_dir=cache_dir, progress=progress,
                  named_genes=getattr(n_genes, "named", ()))
    feature_seconds = time.perf_counter() - t0
    _log(progress, f"features ready ({feature_seconds:.0f} s)")

    tasks, skipped = plan(secs, protocols, seeds)
    for line in skipped:
        _log(progress, f"  {line}")
    records: list[dict] = []

    def keep(rec: dict) -> None:  # on file as soon as measured: an interrupted run keeps what it finished
        RS.append(out, rec)
        records.append(rec)

    if done_records is not None:
        by_task: dict[tuple, list[dict]] = {}
        for r in done_records:
            by_task.setdefault((r.get("dataset"), r.get("section"), r.get("protocol"), r.get("seed")), []).append(r)
        done = [t for t in tasks if _task_done(t, methods, by_task.get(_task_key(t), []), out, t.seed == seeds[0])]
        kept = [r for t in done for r in by_task[_task_key(t)]]
        RS.write(out, kept)
        records.extend(kept)
        tasks = [t for t in tasks if not any(t is d for d in done)]
        _log(progress, f"bench: resuming: {len(kept)} records kept, {len(tasks)} tasks to run")
    with deterministic(threads):
        for task in tasks:
            _run_task(task, secs, methods, quick, n_genes, extra, progress, keep,
                      out if task.seed == seeds[0] else None)
    result = BenchResult(records, {(t.name, t.protocol, t.seed): t.split for t in tasks}, out)
    result.seconds = time.perf_counter() - t_start
    meta = {"seconds_total": result.seconds, "seconds_features": feature_seconds, **meta,
            "encoder": next(iter(secs.values())).encoder}
    meta_path = out / "run.json"
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    result.files += [out / RS.RESULTS, meta_path]
    if report:
        from .report import render

        result.files += render(out)
    _log(progress, f"bench: {len(records)} records in {result.seconds:.0f} s -> {out}")
    return result


#: run.json fields that may differ between an interrupted run and its resumption.
_RESUME_FREE = ("environment", "seconds_total", "seconds_features", "torch_threads")


def _resumable(out: Path, meta: dict) -> list[dict] | None:
    """The records of the interrupted run in ``out`` that ``meta`` may go on with (None: nothing to
    resume, start afresh); a run with other settings is refused (its records would mix)."""
    path = out / "run.json"
    if not path.exists() or not (out / RS.RESULTS).exists():
        return None
    old = json.loads(path.read_text())
    new = json.loads(json.dumps(meta, default=str))
    for m in (old, new):  # a run written when sections were named dataset/section
        m["sections"] = [list(split_name(n)) for n in m.get("sections") or []]
    differ = [k for k in sorted(set(old) | set(new)) if k not in _RESUME_FREE and old.get(k) != new.get(k)
              and not (k == "encoder" and old.get(k) is not None and new.get(k) is None)]
    if differ:
        raise InputError(f"{out} holds a run with other settings ({', '.join(differ)} differ)",
                         where="--resume", fix="give the same options as that run, or another --out")
    return RS.load_records(out / RS.RESULTS)


def _task_key(t: BenchTask) -> tuple:
    return (*split_name(t.name), t.protocol, t.seed)


def _task_methods(t: BenchTask, methods: list[str]) -> tuple[list[str], list[str]]:
    """The methods ``_run_task`` fits for ``t``: on its own (every scope of a cohort protocol shares
    their fits), and per cohort scope (the methods that read the other sections)."""
    cohort = P.get_protocol(t.protocol).cohort
    own = [m for m in methods if M.valid_for(m, t.protocol) and not (cohort and m in M.WITH_OTHER_SECTIONS)]
    return own, ([m for m in methods if m in M.WITH_OTHER_SECTIONS] if cohort else [])


def _task_done(t: BenchTask, methods: list[str], records: list[dict], out: Path, first_seed: bool) -> bool:
    """Whether ``records`` (those of ``t``) hold every record ``_run_task`` writes for ``t`` (and, for
    the first seed, its predictions files)."""
    own, per_scope = _task_methods(t, methods)
    scopes = [scope for scope, _ in t.cohorts] if P.get_protocol(t.protocol).cohort else [None]
    want = {(m, scope) for scope in scopes for m in own + per_scope}
    have = {(r["method"], r.get("prior_from")) for r in records}
    saved = not first_seed or not want or all(
        (out / PR.FOLDER / f"{PR.stem(t.name, t.protocol, t.seed, scope)}.npz").exists() for scope in scopes)
    return want <= have and saved


def _start(out: Path, meta: dict) -> None:
    """A fresh output folder: run.json with the settings (no times: not finished), no records yet,
    no predictions of an earlier run (the report would draw them)."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    RS.write(out, [])
    if (out / RS.LEGACY_RESULTS).exists():
        (out / RS.LEGACY_RESULTS).unlink()
    shutil.rmtree(out / PR.FOLDER, ignore_errors=True)


@dataclass
class _Inputs:
    """What every method of one task is given, and the fields their records share."""

    sec: S.Section  # the section scored
    split: P.Split
    genes: list[str]
    y: np.ndarray  # measured log1p expression of every spot of ``sec``
    base: dict
    task: dict  # ``methods.Task`` arguments


def _inputs(t: BenchTask, secs: dict[str, S.Section], quick: bool, n_genes: int) -> _Inputs:
    """Genes, truth and training data of one task: within a section (R, G, G9, G16, R+, G+), the
    split's training spots; in X, every spot of the other sections (``methods.predict`` says what
    each method may use there)."""
    sec, split = secs[t.name], t.split
    cross = P.get_protocol(t.protocol).cross
    if cross:
        sources = [secs[s] for s in t.sources]
        genes, flavour = P.cross_section_genes([s.adata for s in sources], sec.adata, n_genes)
        y_train = np.vstack([log_normalize(s.adata, genes) for s in sources])
        y = log_normalize(sec.adata, genes)
        train = Spots(*(np.concatenate([getattr(s.spots(np.arange(s.n)), f) for s in sources])
                        for f in ("features", "rows", "cols", "xy")))
        task = {"train": train, "y_train": y_train,
                "train_groups": np.concatenate([np.full(s.n, i) for i, s in enumerate(sources)]),
                "query_groups": np.zeros(sec.n, np.int64), "train_sections": [s.adata for s in sources],
                "query_section": sec.adata, "genes": genes}
        n_train, n_test = len(y_train), sec.n
    else:
        genes, flavour, y = P.within_section_genes(sec.adata, split.train, n_genes)
        task = {"train": sec.spots(split.train), "y_train": y[split.train], "grid": sec.grid}
        n_train, n_test = len(split.train), len(split.test)
    task["query"] = sec.spots(np.arange(sec.n))
    base = {
        "dataset": sec.dataset, "section": sec.section, "protocol": t.protocol, "seed": t.seed,
        "n_train": int(n_train), "n_test": int(n_test), "n_genes": len(genes), "hvg_flavour": flavour,
        "encoder": sec.encoder, "ari_measured": ari(y, sec.labels, t.seed), "labels": _label_kind(sec),
        **({"train_sections": [secs[s].section for s in t.sources]} if cross else {}), "quick": quick,
    }
    return _Inputs(sec, split, genes, y, base, task)


def _record(inp: _Inputs, method: str, pred: np.ndarray, seconds: float, info: dict) -> dict:
    """One record: scores on the scored spots, the ARI of training spots measured + scored spots
    predicted (X: every spot predicted) and, for R, the paper's inflated all-spot scores."""
    y, test = inp.y, inp.split.test
    rec = {**inp.base, "method": method, **score(y[test], pred[test]), "fit_seconds": seconds, **info}
    rec.pop("n_spots", None)
    if P.get_protocol(inp.split.protocol).all_spots_scores:
        inflated = score(y, pred)
        for k in ("pcc", "pcc_top50", "mse", "mae"):
            rec[f"{k}_all_spots_inflated"] = inflated[k]
    rec["ari"] = ari(_mixed(inp, pred), inp.sec.labels, inp.base["seed"])
    return rec


def _mixed(inp: _Inputs, pred: np.ndarray) -> np.ndarray:
    mixed = inp.y.copy()
    mixed[inp.split.test] = pred[inp.split.test]
    return mixed


def _run_task(t: BenchTask, secs: dict[str, S.Section], methods: list[str], quick: bool, n_genes: int,
              clusterers: list[str], progress: bool, keep, save_to: Path | None) -> None:
    """Every method of ``methods`` valid for ``t``: fit, score, ``keep`` each record; with
    ``save_to``, the predictions of the scored spots to ``save_to/predictions/``."""
    inp = _inputs(t, secs, quick, n_genes)
    sec, seed = inp.sec, t.seed
    found: dict = {}
    _extra_domains(inp.base, "measured", inp.y, sec, seed, clusterers, found, quick)
    protocol = P.get_protocol(t.protocol)
    with_cohort = protocol.cohort
    own, cohort_methods = _task_methods(t, methods)
    alone: list[tuple[dict, np.ndarray]] = []
    for method in own:
        pred, info, seconds = run_method(method, M.Task(**inp.task, seed=seed, quick=quick))
        rec = _record(inp, method, pred, seconds, info)
        _extra_domains(rec, method, _mixed(inp, pred), sec, seed, clusterers, found, quick)
        alone.append((rec, pred))
        if with_cohort:
            continue
        keep(rec)
        where = f"{t.protocol}<-{'+'.join(secs[s].section for s in t.sources)}" if protocol.cross else t.protocol
        _log(progress, f"  {sec.name} {where} seed {seed} {method:15s} pcc {rec['pcc']:.3f} "
             f"top50 {rec['pcc_top50']:.3f} mse {rec['mse']:.4f} ({seconds:.0f} s)"
             + "".join(f" ARI {D.NAMES[c]} {rec[f'ari_{c}']:.3f}" for c in clusterers if f"ari_{c}" in rec))
    if not with_cohort:
        if save_to is not None and alone:
            _save(save_to, t, inp, {r["method"]: p for r, p in alone}, found)
        return
    for scope, names in t.cohorts:
        srcs = [secs[n] for n in names]
        shared = P.shared_genes(inp.genes, [s.adata for s in srcs])
        covered = np.isin(inp.genes, shared)
        where = {"prior_from": scope, "prior_sections": [s.section for s in srcs],
                 "prior_genes_covered": int(covered.sum())}
        done = [({**rec, **where}, pred) for rec, pred in alone]
        for rec, _ in done:
            keep(rec)
        if cohort_methods:
            prior, prior_seconds = fit_prior(srcs, shared, seed, quick)
            cohort = M.Cohort(
                features=np.vstack([s.features for s in srcs]),
                y=np.vstack([log_normalize(s.adata, shared) for s in srcs]), covered=covered, prior=prior,
                section=sec.adata, section_features=sec.features, train_index=t.split.train, genes=inp.genes,
                prior_seconds=prior_seconds)
            for method in cohort_methods:
                pred, info, seconds = run_method(method, M.Task(**inp.task, seed=seed, quick=quick, cohort=cohort))
                rec = {**_record(inp, method, pred, seconds, info), **where}
                if "prior_fit_seconds" in rec:  # a method that read the prior says so last, after its scope
                    rec["prior_fit_seconds"] = rec.pop("prior_fit_seconds")
                _extra_domains(rec, method, _mixed(inp, pred), sec, seed, clusterers, found, quick)
                keep(rec)
                done.append((rec, pred))
        _log(progress, f"  {sec.name} {t.protocol} seed {seed} ({scope}: {'+'.join(s.section for s in srcs)}) "
             + ", ".join(f"{r['method']} {r['pcc']:.3f}" for r, _ in done))
        if save_to is not None and done:
            _save(save_to, t, inp, {r["method"]: p for r, p in done}, found, scope)


def _save(out: Path, t: BenchTask, inp: _Inputs, preds: dict[str, np.ndarray], found: dict,
          scope: str | None = None) -> None:
    test = t.split.test
    PR.save(out, PR.Saved(inp.sec.name, t.protocol, t.seed, inp.genes, inp.y, t.split.train, test, inp.sec.xy,
                          inp.sec.labels, {m: p[test] for m, p in preds.items()}, found, scope))


def _clean(info: dict) -> dict:
    """The small, JSON-friendly part of a method's info (no configs, no arrays)."""
    keep = (
        "k",
        "k_genes",
        "image_blend",
        "n_components",
        "alpha",
        "n_pcs",
        "epochs_run",
        "steps_run",
        "best_epoch",
        "stopped",
        "initial_val_loss",
        "best_val_loss",
        "skipped",
        "n_pooled",
        "prior_stack_weight",
        "prior_gene_head_alpha",
        "prior_fit_seconds",
    )
    flat = {**info, **(info.get("history") or {}), **{f"prior_{k}": v for k, v in (info.get("prior") or {}).items()}}
    out = {k: flat[k] for k in keep if flat.get(k) is not None}
    return {k: (float(v) if isinstance(v, float | np.floating) else v) for k, v in out.items()}


def ari(expression: np.ndarray, labels: np.ndarray | None, seed: int) -> float | None:
    """The ARI of spatial domains clustered from ``expression`` against ``labels`` (None without
    labels): ``evaluate.domains_ari``; a constant prediction (the 'mean' method in X) is one domain: ARI 0."""
    if labels is None:
        return None
    if np.ptp(np.asarray(expression), axis=0).max() <= 1e-12:
        return 0.0
    return domains_ari(expression, labels, seed=seed)


def _extra_domains(rec: dict, key: str, expression: np.ndarray, sec: S.Section, seed: int, clusterers: list[str],
                   found: dict | None, quick: bool = False) -> None:
    """``ari_<clusterer>`` (``ari_measured_<clusterer>`` for ``key='measured'``) of each extra clusterer
    into ``rec``, its time into ``<clusterer>_seconds``; the labels into ``found[clusterer][key]``."""
    labels = sec.labels
    if labels is None:
        return
    constant = np.ptp(np.asarray(expression), axis=0).max() <= 1e-12  # as in ari: one domain
    for name in clusterers:
        t = time.perf_counter()
        k = D.n_domains(labels)
        lab = np.zeros(sec.n, np.int64) if constant else D.cluster(name, expression, sec.xy, k, seed, quick=quick)
        field = f"ari_measured_{name}" if key == "measured" else f"ari_{name}"
        rec[field] = D.ari(labels, lab)
        rec[f"{name}_seconds" if key != "measured" else f"{name}_measured_seconds"] = time.perf_counter() - t
        if found is not None:
            found.setdefault(name, {})[key] = lab


def run_method(method: str, task: M.Task) -> tuple[np.ndarray, dict, float]:
    """(predictions of ``task.query``, the record's part of the fit's info, seconds): one method
    on one task, as ``run`` fits it (``methods.predict``)."""
    t = time.perf_counter()
    pred, info = M.predict(method, task)
    return np.asarray(pred, np.float32), _clean(info), time.perf_counter() - t


def fit_prior(sources: list[S.Section], genes: list[str] | None, seed: int, quick: bool = False,
              n_genes: int = P.N_GENES):
    """The prior of protocols R+ and G+: an image-mode ``HisToSGE`` fitted on every spot of
    ``sources`` for ``genes`` (None: their own top ``n_genes`` HVGs), saved to a model file and
    loaded back (as ``histosge train --mode image`` writes it and ``--prior`` reads it).
    Returns (loaded model, seconds)."""
    import tempfile

    from ..model import HisToSGE

    t = time.perf_counter()
    network = {"epochs": M.QUICK_EPOCHS["histosge"]} if quick else None
    model = HisToSGE("image", network=network, seed=seed, n_top_genes=n_genes)
    model.fit([s.adata for s in sources], genes=genes, features=[s.features for s in sources], progress=False)
    with tempfile.TemporaryDirectory(prefix="histosge-prior-") as tmp:
        path = Path(tmp) / "prior.histosge"
        model.save(path)
        loaded = HisToSGE.load(path)
    return loaded, time.perf_counter() - t


def _label_kind(sec: S.Section) -> str | None:
    """What the section's labels are (``datasets.Dataset.labels``; a dataset not registered: a manual annotation)."""
    if sec.labels is None:
        return None
    from ..datasets import get_dataset

    dataset = get_dataset(sec.dataset)
    return (dataset.labels if dataset is not None else None) or "manual annotation"

