"""``run``: every (section, protocol, seed, method), scored on held-out spots, to results.json + report.md."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_path
from ..errors import InputError
from ..evaluate import domains_ari, score
from ..genes import log_normalize
from ..model import Spots
from ..provenance import environment
from . import domains as D
from . import methods as M
from . import protocols as P
from . import sections as S

#: Protocols run by default (X is cheap next to R and G and fits the same budget).
DEFAULT_PROTOCOLS = ("R", "G", "X")
DEFAULT_SEEDS = (0,)


@dataclass
class BenchResult:
    """What ``run`` measured: the records of results.json, the splits used, and the files written.

    ``splits[(section, protocol, seed)]`` holds the spot indices (into the section as read) that
    trained and that were scored; for X the training spots come from other sections, so ``train``
    is empty and ``train_sections`` in the record names them.
    """

    records: list[dict]
    splits: dict[tuple[str, str, int], P.Split]
    out: Path
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _subset(sec: S.Section, idx: np.ndarray) -> Spots:
    return Spots(sec.features[idx], sec.rows[idx], sec.cols[idx], sec.xy[idx])


@contextlib.contextmanager
def _deterministic(threads: int | None) -> Iterator[None]:
    """Deterministic torch kernels and a fixed thread count (results depend on neither run nor load)."""
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
    n_genes: int = P.N_GENES,
    threads: int | None = 1,
    report: bool = True,
    progress: bool = True,
    domains: Sequence[str] | str = ("kmeans",),
) -> BenchResult:
    """Benchmark ``methods`` on ``sections`` of ``data_dir`` under ``protocols``; write ``out``/.

    - ``sections``: names like 'dlpfc/151673' or 'her2st:C2'; default: all found in ``data_dir``.
    - ``protocols``: 'R' (random half held out), 'G' (4x generation), 'X' (cross-section);
      also 'G9', 'G16' (9x, 16x generation) and 'R+', 'G+' (R and G with the other sections of
      the dataset known: a prior for histosge, pooled spots for the baselines); not in the default.
    - ``methods``: see ``methods.ALL_METHODS``; default ``methods.DEFAULT_METHODS``.
    - ``seeds``: one run per seed (splits of R and every model's initialisation).
    - ``encoder``: image encoder name (default ``histosge.encode.DEFAULT_ENCODER``).
    - ``quick``: few epochs, and unless ``sections`` are named only one small section (the first
      her2st one): a smoke test in < 2 minutes, not a measurement.
    - ``cache_dir``: feature cache (default: the encoder module's, ``~/.cache/histosge/features``).
    - ``threads``: torch CPU threads while fitting (default 1: on a shared 2-core machine two
      threads ran small models ~10x slower than one; None keeps torch's setting).
    - ``domains``: clusterers of the spatial domains, 'kmeans' (always run: the ``ari`` field)
      and 'stagate' (``benchmark.domains``; fields ``ari_stagate`` and ``ari_measured_stagate``
      on sections with labels; minutes per clustering on a CPU, so not in the default). Without
      the 'domains' extra installed, STAGATE is skipped and run.json and the report say why.

    Writes ``out/results.json`` (one record per section x protocol x seed x method) and, with
    ``report``, ``out/report.md`` and its PNGs. Scores are on held-out spots only, except the
    fields ending in ``_all_spots_inflated`` (protocol R, training spots included, as the paper
    scored). Returns a :class:`BenchResult`.
    """
    t_start = time.perf_counter()
    out = Path(out)
    protocols = _parse(protocols, P.PROTOCOLS, "protocol")
    methods = _parse(methods, M.ALL_METHODS, "method")
    clusterers = _parse(domains, D.CLUSTERERS, "domain")
    stagate_skipped = D.stagate_missing() if "stagate" in clusterers else None
    if stagate_skipped:
        _log(progress, f"bench: STAGATE skipped: {stagate_skipped}")
    extra = [c for c in clusterers if c == "stagate" and not stagate_skipped]
    try:
        seeds = [int(s) for s in _parse(seeds, None, "seed")]
    except ValueError as err:
        raise InputError(f"seeds must be integers ({err})", where="--seeds", fix="e.g. --seeds 0,1,2") from None
    names = [S.normalise_name(n) for n in _parse(sections, None, "section")] if sections else S.discover(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    if quick and not sections:  # one small section: a legacy-ST (her2st) one has a few hundred spots
        names = sorted(names, key=lambda n: not n.startswith("her2st/"))[:1]
        protocols = [p for p in protocols if p != "X"] or ["R"]

    _log(
        progress,
        f"bench: {len(names)} sections, protocols {','.join(protocols)}, methods {','.join(methods)}, "
        f"seeds {','.join(map(str, seeds))}{' (quick)' if quick else ''}",
    )
    t0 = time.perf_counter()
    secs = S.load(names, data_dir, encoder=encoder, cache_dir=cache_dir, progress=progress)
    feature_seconds = time.perf_counter() - t0
    _log(progress, f"features ready ({feature_seconds:.0f} s)")

    records: list[dict] = []
    splits: dict[tuple[str, str, int], P.Split] = {}
    results_path = out / "results.json"

    def save() -> None:  # after every record, so an interrupted run keeps what it finished
        with atomic_path(results_path) as tmp:
            tmp.write_text(json.dumps(records, indent=1, default=_json_default) + "\n")

    def keep(rec: dict) -> None:
        records.append(rec)
        save()

    kept: dict = {}  # predictions kept for the report's figures
    cohorts = P.prior_sources(names)
    with _deterministic(threads):
        for name in names:
            sec = secs[name]
            for protocol in (p for p in protocols if p != "X"):
                if protocol in P.WITH_PRIOR and name not in cohorts:
                    _log(progress, f"  {name} {protocol}: skipped, no other section of its dataset is named")
                    continue
                for seed in seeds:
                    if protocol in P.WITH_PRIOR:
                        split = P.split_r(sec.n, seed) if protocol == "R+" else P.split_g(sec.rows, sec.cols, sec.grid)
                        split = P.Split(protocol, split.train, split.test)
                        splits[(name, protocol, seed)] = split
                        sources = [(scope, [secs[n] for n in srcs]) for scope, srcs in cohorts[name]]
                        records += _within_prior(sec, split, sources, seed, methods, quick, n_genes, progress)
                        save()
                        continue
                    if protocol == "R":
                        split = P.split_r(sec.n, seed)
                    else:
                        split = P.split_g(sec.rows, sec.cols, sec.grid, P.GENERATION[protocol])
                        if len(split.train) < P.MIN_TRAIN_SPOTS or not len(split.test):
                            _log(progress, f"  {name} {protocol}: skipped, its coarse lattice has "
                                           f"{len(split.train)} spots (< {P.MIN_TRAIN_SPOTS})")
                            break
                    splits[(name, protocol, seed)] = split
                    _within(
                        sec,
                        split,
                        seed,
                        methods,
                        quick,
                        n_genes,
                        kept if seed == seeds[0] else None,
                        progress,
                        extra,
                        keep,
                    )
        if "X" in protocols:
            for target, sources in P.cross_groups(names).items():
                for seed in seeds:
                    splits[(target, "X", seed)] = P.Split("X", np.zeros(0, np.int64), np.arange(secs[target].n))
                    _cross(
                        secs[target],
                        [secs[s] for s in sources],
                        seed,
                        methods,
                        quick,
                        n_genes,
                        kept if seed == seeds[0] else None,
                        progress,
                        extra,
                        keep,
                    )
    result = BenchResult(records, splits, out)
    result.seconds = time.perf_counter() - t_start
    meta = {
        "seconds_total": result.seconds,
        "seconds_features": feature_seconds,
        "quick": quick,
        "sections": names,
        "protocols": protocols,
        "methods": methods,
        "seeds": seeds,
        "encoder": next(iter(secs.values())).encoder,
        "n_genes": n_genes,
        "torch_threads": threads or torch.get_num_threads(),
        "environment": environment(),  # package versions, CPU, BLAS: what the numbers depend on
        "domains": ["kmeans", *extra],
        **({"stagate_skipped": stagate_skipped} if stagate_skipped else {}),
    }
    save()
    result.files.append(results_path)
    meta_path = out / "run.json"
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    result.files.append(meta_path)
    if report:
        from .report import write_report

        result.files += write_report(records, out, kept=kept, meta=meta)
    _log(progress, f"bench: {len(records)} records in {result.seconds:.0f} s -> {out}")
    return result


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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


def _ari(expression: np.ndarray, labels: np.ndarray | None, seed: int) -> float | None:
    """``evaluate.domains_ari``; a constant prediction (the 'mean' method in X) is one domain: ARI 0."""
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
    constant = np.ptp(np.asarray(expression), axis=0).max() <= 1e-12  # as in _ari: one domain
    for name in clusterers:
        t = time.perf_counter()
        k = D.n_domains(labels)
        lab = np.zeros(sec.n, np.int64) if constant else D.cluster(name, expression, sec.xy, k, seed, quick=quick)
        field = f"ari_measured_{name}" if key == "measured" else f"ari_{name}"
        rec[field] = D.ari(labels, lab)
        rec[f"{name}_seconds" if key != "measured" else f"{name}_measured_seconds"] = time.perf_counter() - t
        if found is not None:
            found.setdefault(name, {})[key] = lab


def _fit(method: str, task: M.Task) -> tuple[np.ndarray, dict, float]:
    t = time.perf_counter()
    pred, info = M.predict(method, task)
    return np.asarray(pred, np.float32), _clean(info), time.perf_counter() - t


def _within(
    sec: S.Section,
    split: P.Split,
    seed: int,
    methods: list[str],
    quick: bool,
    n_genes: int,
    kept: dict | None,
    progress: bool,
    clusterers: list[str] = (),
    emit=None,
) -> list[dict]:
    """Protocols R and G on one section: fit ``split.train``, predict every spot, score ``split.test``."""
    genes, flavour, y = P.within_section_genes(sec.adata, split.train, n_genes)
    labels = sec.labels
    ari_measured = _ari(y, labels, seed)
    everyone = np.arange(sec.n)
    base = {
        "dataset": sec.dataset,
        "section": sec.section,
        "protocol": split.protocol,
        "seed": seed,
        "n_train": int(len(split.train)),
        "n_test": int(len(split.test)),
        "n_genes": len(genes),
        "hvg_flavour": flavour,
        "encoder": sec.encoder,
        "ari_measured": ari_measured,
        "labels": _label_kind(sec),
        "quick": quick,
    }
    found: dict | None = {} if kept is not None else None
    _extra_domains(base, "measured", y, sec, seed, clusterers, found, quick)
    out = []
    for method in methods:
        if not M.valid_for(method, split.protocol):
            continue
        task = M.Task(_subset(sec, split.train), y[split.train], _subset(sec, everyone), seed=seed, quick=quick,
                      grid=sec.grid)
        pred, info, secs = _fit(method, task)
        rec = _scored(base, method, y, pred, split, labels, seed, secs, info)
        mixed = y.copy()
        mixed[split.test] = pred[split.test]
        _extra_domains(rec, method, mixed, sec, seed, clusterers, found, quick)
        out.append(rec)
        if emit:
            emit(rec)
        _log(
            progress,
            f"  {sec.name} {split.protocol} seed {seed} {method:15s} pcc {rec['pcc']:.3f} "
            f"top50 {rec['pcc_top50']:.3f} mse {rec['mse']:.4f} ({secs:.0f} s)"
            + (f" ARI k-means {rec['ari']:.3f} STAGATE {rec['ari_stagate']:.3f}" if "ari_stagate" in rec else ""),
        )
        if kept is not None:
            kept.setdefault(
                (sec.name, split.protocol),
                {"section": sec, "split": split, "genes": genes, "y": y, "pred": {}},
            )["pred"][method] = pred
            if found:
                kept[(sec.name, split.protocol)]["domains"] = found
    return out


def _scored(base: dict, method: str, y: np.ndarray, pred: np.ndarray, split: P.Split, labels, seed: int,
            seconds: float, info: dict) -> dict:
    """One record of a within-section protocol: held-out scores, ARI of training + predicted spots
    (and, for R, the paper's inflated all-spot scores)."""
    rec = {**base, "method": method, **score(y[split.test], pred[split.test]), "fit_seconds": seconds, **info}
    rec.pop("n_spots", None)
    if split.protocol == "R":
        inflated = score(y, pred)
        for k in ("pcc", "pcc_top50", "mse", "mae"):
            rec[f"{k}_all_spots_inflated"] = inflated[k]
    mixed = y.copy()
    mixed[split.test] = pred[split.test]
    rec["ari"] = _ari(mixed, labels, seed)
    return rec


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
    model = HisToSGE("image", network=network, seed=seed, n_genes=n_genes)
    model.fit([s.adata for s in sources], genes=genes, features=[s.features for s in sources], progress=False)
    with tempfile.TemporaryDirectory(prefix="histosge-prior-") as tmp:
        path = Path(tmp) / "prior.histosge"
        model.save(path)
        loaded = HisToSGE.load(path)
    return loaded, time.perf_counter() - t


def _within_prior(
    sec: S.Section,
    split: P.Split,
    sources: list[tuple[str, list[S.Section]]],
    seed: int,
    methods: list[str],
    quick: bool,
    n_genes: int,
    progress: bool,
) -> list[dict]:
    """Protocols R+ and G+: the split and genes of R or G; the methods that read one section run
    once, those that read the other sections (``methods.WITH_OTHER_SECTIONS``) once per scope of
    ``sources`` ('same patient', 'other patients'). Every record names its scope and sections."""
    genes, flavour, y = P.within_section_genes(sec.adata, split.train, n_genes)
    labels = sec.labels
    everyone = np.arange(sec.n)
    base = {
        "dataset": sec.dataset, "section": sec.section, "protocol": split.protocol, "seed": seed,
        "n_train": int(len(split.train)), "n_test": int(len(split.test)), "n_genes": len(genes),
        "hvg_flavour": flavour, "encoder": sec.encoder, "ari_measured": _ari(y, labels, seed),
        "labels": _label_kind(sec), "quick": quick,
    }
    own = [m for m in methods if M.valid_for(m, split.protocol) and m not in M.WITH_OTHER_SECTIONS]
    cohort_methods = [m for m in methods if m in M.WITH_OTHER_SECTIONS]
    alone = []
    for method in own:
        task = M.Task(_subset(sec, split.train), y[split.train], _subset(sec, everyone), seed=seed, quick=quick)
        pred, info, secs = _fit(method, task)
        alone.append(_scored(base, method, y, pred, split, labels, seed, secs, info))
    out = []
    for scope, srcs in sources:
        shared = P.shared_genes(genes, [s.adata for s in srcs])
        covered = np.isin(genes, shared)
        where = {"prior_from": scope, "prior_sections": [s.section for s in srcs],
                 "prior_genes_covered": int(covered.sum())}
        for rec in alone:
            out.append({**rec, **where})
        if not cohort_methods:
            continue
        prior, prior_seconds = fit_prior(srcs, shared, seed, quick)
        cohort = M.Cohort(
            features=np.vstack([s.features for s in srcs]),
            y=np.vstack([log_normalize(s.adata, shared) for s in srcs]), covered=covered, prior=prior,
            section=sec.adata, section_features=sec.features, train_index=split.train, genes=genes,
            prior_seconds=prior_seconds)
        for method in cohort_methods:
            task = M.Task(_subset(sec, split.train), y[split.train], _subset(sec, everyone), seed=seed, quick=quick,
                          cohort=cohort)
            pred, info, secs = _fit(method, task)
            rec = {**_scored(base, method, y, pred, split, labels, seed, secs, info), **where}
            if "prior_fit_seconds" in rec:  # a method that read the prior says so last, after its scope
                rec["prior_fit_seconds"] = rec.pop("prior_fit_seconds")
            out.append(rec)
        _log(progress, f"  {sec.name} {split.protocol} seed {seed} ({scope}: {'+'.join(s.section for s in srcs)}) "
             + ", ".join(f"{r['method']} {r['pcc']:.3f}" for r in out if r["prior_from"] == scope))
    return out


def _cross(
    target: S.Section,
    sources: list[S.Section],
    seed: int,
    methods: list[str],
    quick: bool,
    n_genes: int,
    kept: dict | None,
    progress: bool,
    clusterers: list[str] = (),
    emit=None,
) -> list[dict]:
    """Protocol X: train on every spot of ``sources``, predict every spot of ``target`` from its
    image (``methods.predict`` says what each method may use there)."""
    genes, flavour = P.cross_section_genes([s.adata for s in sources], target.adata, n_genes)
    y_train = np.vstack([log_normalize(s.adata, genes) for s in sources])
    y = log_normalize(target.adata, genes)
    train = Spots(*(np.concatenate([getattr(_subset(s, np.arange(s.n)), f) for s in sources])
                    for f in ("features", "rows", "cols", "xy")))
    groups = np.concatenate([np.full(s.n, i) for i, s in enumerate(sources)])
    query = _subset(target, np.arange(target.n))
    labels = target.labels
    ari_measured = _ari(y, labels, seed)
    base = {
        "dataset": target.dataset,
        "section": target.section,
        "protocol": "X",
        "seed": seed,
        "n_train": int(len(y_train)),
        "n_test": int(target.n),
        "n_genes": len(genes),
        "hvg_flavour": flavour,
        "encoder": target.encoder,
        "ari_measured": ari_measured,
        "labels": _label_kind(target),
        "train_sections": [s.section for s in sources],
        "quick": quick,
    }
    found: dict | None = {} if kept is not None else None
    _extra_domains(base, "measured", y, target, seed, clusterers, found, quick)
    out = []
    for method in methods:
        if not M.valid_for(method, "X"):
            continue
        task = M.Task(
            train,
            y_train,
            query,
            seed=seed,
            quick=quick,
            train_groups=groups,
            query_groups=np.zeros(target.n, np.int64),
            train_sections=[s.adata for s in sources],
            query_section=target.adata,
            genes=genes,
        )
        pred, info, secs = _fit(method, task)
        rec = {**base, "method": method, **score(y, pred), "fit_seconds": secs, **info}
        rec.pop("n_spots", None)
        rec["ari"] = _ari(pred, labels, seed)
        _extra_domains(rec, method, pred, target, seed, clusterers, found, quick)
        out.append(rec)
        if emit:
            emit(rec)
        if kept is not None:
            kept.setdefault(
                (target.name, "X"),
                {
                    "section": target,
                    "split": P.Split("X", [], np.arange(target.n)),
                    "genes": genes,
                    "y": y,
                    "pred": {},
                },
            )["pred"][method] = pred
            if found:
                kept[(target.name, "X")]["domains"] = found
        _log(
            progress,
            f"  {target.name} X<-{'+'.join(s.section for s in sources)} seed {seed} {method:15s} "
            f"pcc {rec['pcc']:.3f} top50 {rec['pcc_top50']:.3f} mse {rec['mse']:.4f} ({secs:.0f} s)",
        )
    return out


def _label_kind(sec: S.Section) -> str | None:
    if sec.labels is None:
        return None
    return "expression clusters (her2st)" if sec.dataset == "her2st" else "manual annotation"
