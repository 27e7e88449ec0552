"""Seconds per epoch of every method of the paper's comparison, before and after issue 29, in one run.

"Before" is the code at commit ``OLD`` (392632d): its method modules, read with ``git show`` and
loaded beside today's (nothing is checked out), trained as ``histosge bench`` trained them (one
torch thread). "After" is today's code twice: at one thread (the change in the code alone) and
at one thread per core under the benchmark's early-stop rule (what ``bench/paper_comparison.py``
runs). STAGATE's clustering did not change in code, so it is timed at one thread and at all
cores. The two HisToSGE methods did not change per epoch (only their stopping moved into
``model.early_stop``), so they are timed after only.

Each is timed at two short lengths on the benchmark's own inputs (dlpfc:151673 and her2st:C2
protocol R, seed 0, the 1000 HVGs of the training spots, cached he-stats features); the slope is
the cost of one epoch, the intercept that of building, validating once and predicting. The file
also says whether old and new compute the same: the largest absolute difference between their
predictions after the shorter fit, at one thread (0 = identical bit for bit).

    python bench/baseline_epoch_cost.py --data ../shared/data --out bench/results/baseline_epoch_cost.json

It takes a few minutes on an idle 2-core machine; a busy machine makes every number larger
(the load average is recorded with each).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OLD = "392632d"
#: (method, the parameter that sets its length, two lengths, epochs per unit of that parameter)
PLAN = {
    "stage": ("epochs", (2, 6), 1.0),
    "thitogene": ("epochs", (1, 2), 1.0),
    "histogene": ("steps", (10, 30), 0.5),
    "deepspace": ("epochs", (1, 3), 1.0),
    "stnet": ("epochs", (2, 8), 1.0),
    "histosge-paper": ("network.epochs", (1, 3), 1.0),
    "histosge": ("network.epochs", (2, 6), 1.0),
    "stagate": ("n_epochs", (10, 30), 1.0),
    "stmask": ("epochs", (5, 15), 1.0),
}
CLUSTERERS = ("stagate", "stmask")
CHANGED = ("stage", "thitogene", "histogene", "deepspace", "stnet")


def _git_show(path: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def _load(name: str, source: str):
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "histosge.methods"
    sys.modules[name] = module
    exec(compile(source, f"{OLD}:{name}", "exec"), module.__dict__)
    return module


def old_class(method: str):
    """The method's class as it was at ``OLD``, loaded under another module name (its
    registration is skipped: the name is taken by today's class, whose spec it borrows)."""
    from histosge.methods import _registry

    if "histosge.methods._old_torch" not in sys.modules:
        _load("histosge.methods._old_torch", _git_show("src/histosge/methods/_torch.py"))
    source = _git_show(f"src/histosge/methods/{method}.py").replace("from ._torch import", "from ._old_torch import")
    real = _registry.register_method

    def borrow(name, **_spec):
        def deco(cls):
            cls.spec = _registry.get_spec(name)
            return cls
        return deco

    _registry.register_method = borrow
    try:
        module = _load(f"histosge.methods._old_{method}", source)
    finally:
        _registry.register_method = real
    return next(v for v in vars(module).values() if isinstance(v, type) and getattr(v, "spec", None) is not None
                and v.spec.name == method and v.__module__ == module.__name__)


@contextmanager
def threads(n: int):
    from histosge.benchmark import deterministic

    with deterministic(n):
        yield


def _inputs(name: str, data: str):
    from histosge.benchmark import domains as D
    from histosge.benchmark import protocols as P
    from histosge.benchmark import sections as S


    sec = S.load([name], data, progress=False)[name]
    split = P.split_r(sec.n, 0)
    _, _, y = P.within_section_genes(sec.adata, split.train)
    return {"sec": sec, "train": sec.spots(split.train), "y_train": y[split.train],
            "query": sec.spots(np.arange(sec.n)), "y": y,
            "k": max(D.n_domains(sec.labels), 2) if sec.labels is not None else 2}


def _params(method: str, length: int, grid: str, rule: bool, cls) -> dict:
    key = PLAN[method][0]
    params: dict = {"seed": 0}
    if key == "network.epochs":
        params["network"] = {"epochs": length}
    else:
        params[key] = length
    if method == "stage":
        params["grid"] = grid
    if method == "deepspace":
        params["early_stop"] = 10**6  # the authors' stop must not end a timing run
    if rule:
        rule_params = cls.stop_rule_params()
        if "network" in rule_params:
            params["network"] = {**rule_params["network"], **params["network"]}
        else:
            params |= rule_params
    return params


def _fit_predict(cls, method: str, params: dict, inp: dict) -> np.ndarray:
    seen = {"query": inp["query"]} if cls.spec.fit_takes_query else {}
    m = cls(**params).fit(inp["train"], inp["y_train"], **seen)
    return np.asarray(m.predict(inp["query"]), np.float32)


def _cluster(method: str, inp: dict, epochs: int) -> np.ndarray:
    from histosge.benchmark import domains as D
    from histosge.benchmark import stmask

    if method == "stagate":
        return D.stagate(inp["y"], inp["sec"].xy, inp["k"], 0, n_epochs=epochs)
    return stmask.cluster(inp["y"], inp["sec"].xy, inp["k"], 0, epochs=epochs)


def time_one(method: str, cls, inp: dict, n_threads: int, rule: bool) -> dict:
    """Seconds at the two lengths, the slope per epoch, and the shorter fit's output."""
    _, lengths, per_unit = PLAN[method]
    secs, outs = [], []
    load0 = os.getloadavg()[0]
    with threads(n_threads):
        for length in lengths:
            t = time.perf_counter()
            if method in CLUSTERERS:
                outs.append(_cluster(method, inp, length))
            else:
                outs.append(_fit_predict(cls, method, _params(method, length, inp["sec"].grid, rule, cls), inp))
            secs.append(time.perf_counter() - t)
    epochs = [length * per_unit for length in lengths]
    per_epoch = (secs[1] - secs[0]) / (epochs[1] - epochs[0])
    return {"threads": n_threads, "stop_rule": rule, "epochs_timed": epochs, "seconds_timed": secs,
            "seconds_per_epoch": per_epoch, "seconds_fixed": max(0.0, secs[0] - epochs[0] * per_epoch),
            "load_average_1min": [load0, os.getloadavg()[0]], "_out": outs[0]}


def measure(name: str, data: str, methods: list[str], cores: int) -> list[dict]:
    from histosge.methods import get_spec

    inp = _inputs(name, data)
    records = []
    for method in methods:
        rec = {"section": name, "protocol": "R", "method": method, "n_train": len(inp["y_train"]),
               "n_spots": len(inp["y"])}
        cls = None if method in CLUSTERERS else get_spec(method).cls
        runs = {}
        if method in CHANGED:
            runs["old_1_thread"] = time_one(method, old_class(method), inp, 1, False)
        if method not in CLUSTERERS:
            runs["new_1_thread"] = time_one(method, cls, inp, 1, False)
            runs["new_cores_stop_rule"] = time_one(method, cls, inp, cores, True)
        else:
            runs["one_thread"] = time_one(method, cls, inp, 1, False)
            runs["cores"] = time_one(method, cls, inp, cores, False)
        if "old_1_thread" in runs:
            a, b = runs["old_1_thread"]["_out"], runs["new_1_thread"]["_out"]
            rec["max_abs_difference_old_new"] = float(np.abs(a - b).max())
        for run in runs.values():
            run.pop("_out")
        rec["runs"] = runs
        records.append(rec)
        line = ", ".join(f"{k} {v['seconds_per_epoch']:.3f} s/epoch" for k, v in runs.items())
        diff = f" (old vs new max |diff| {rec['max_abs_difference_old_new']:.3g})" if "old_1_thread" in runs else ""
        print(f"{name} {method}: {line}{diff}", flush=True)
    return records


def main(argv=None) -> int:
    from histosge.benchmark import cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--sections", default="dlpfc:151673,her2st:C2")
    ap.add_argument("--methods", default=",".join(PLAN))
    ap.add_argument("--out", default="bench/results/baseline_epoch_cost.json")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(PLAN))
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {', '.join(PLAN)}")
    n = cores()
    records = []
    for name in args.sections.split(","):
        records += measure(name, args.data, methods, n)
    meta = {"date": date.today().isoformat(), "cpu_count": os.cpu_count(), "cores": n, "old_commit": OLD,
            "command": "python bench/baseline_epoch_cost.py " + " ".join(
                f"--{k} {v}" for k, v in vars(args).items() if k != "data") + " --data ../shared/data",
            "note": "old = the code at old_commit, one torch thread (the benchmark's setting then); new_1_thread = "
                    "today's code, same setting; new_cores_stop_rule = today's code as bench/paper_comparison.py "
                    "runs it (one torch thread per core, the early-stop rule's validation every epoch). "
                    "load_average_1min says how busy the machine was."}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
