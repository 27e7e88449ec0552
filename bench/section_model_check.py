"""Same-machine before/after check of a restructuring: the user-facing outputs of superres, recover,
train and predict on her2st sections with he-stats, captured with one checkout's code and compared
with another's.

What it captures (``capture``): every array an output holds (``X``, ``layers``, numeric ``obs``
columns, ``var['cv_pcc']``), its ``uns['histosge']`` and every written model file's description,
with what cannot repeat taken out (times, creation dates, checksums that cover them). Cases:
superres and recover with our model and the baselines, the paper's model, a cross-section
image-mode model trained on C3+C4 saved and used on C2 and on the slide ``her2st_C4.ome.tif``, a
neighbours-mode model with that prior, saved baseline models predicting other sections, and the
records of a quick ``histosge bench`` (protocols R, G, X, R+) on C2-C4. Only public names are used,
so the same script runs on the code before and after a change::

    PYTHONPATH=OLD/src python bench/section_model_check.py capture /tmp/before
    PYTHONPATH=NEW/src python bench/section_model_check.py capture /tmp/after
    python bench/section_model_check.py compare /tmp/before /tmp/after [--json bench/results/x.json]

One torch thread and one BLAS thread, deterministic kernels: on the same machine, with the feature
cache warm, every array is expected bit for bit, and ``compare`` says where one is not (and by how
much). Capture once to fill the cache first: networks trained on freshly computed features moved in
their last bits against the same features read from the cache (the arrays' memory alignment).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

VOLATILE = {"created", "integrity", "seconds", "prior_fit_seconds", "histosge_version"}


def _clean(obj, under: str = ""):
    """``obj`` without what differs between two runs of the same code (times, dates, file hashes)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            k = str(k)
            if k in VOLATILE or (k in ("sha256", "file_sha256") and under != "arrays"):
                continue
            out[k] = _clean(v, k)
        return out
    if isinstance(obj, (list, tuple)):
        return [_clean(v, under) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist(), under)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj


def _output(name: str, adata, arrays: dict, meta: dict) -> None:
    import scipy.sparse as sp

    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    arrays[f"{name}/X"] = x
    for key, value in adata.layers.items():
        arrays[f"{name}/layers/{key}"] = np.asarray(value)
    for col in adata.obs.columns:
        values = adata.obs[col]
        if values.dtype.kind in "fiub":
            arrays[f"{name}/obs/{col}"] = values.to_numpy()
        else:
            meta.setdefault(name, {})[f"obs/{col}"] = [str(v) for v in values.astype(object)]
    for col in adata.var.columns:
        values = adata.var[col]
        if values.dtype.kind in "fiub":
            arrays[f"{name}/var/{col}"] = values.to_numpy()
    meta.setdefault(name, {})["var_names"] = [str(g) for g in adata.var_names]
    meta[name]["obs_names"] = [str(o) for o in adata.obs_names]
    meta[name]["uns"] = _clean(adata.uns.get("histosge", {}))
    meta[name]["obsm"] = sorted(adata.obsm)


def _description(name: str, path: Path, meta: dict) -> None:
    from histosge.model.persist import read_description

    meta[f"{name}/description"] = _clean(read_description(path))


def capture(out: Path, data_dir: Path, cache_dir: Path) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    import histosge
    from histosge import tasks
    from histosge.methods import load_model

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"histosge": histosge.__file__}
    common = {"encoder": "he-stats", "n_top_genes": 100, "cache_dir": str(cache_dir), "progress": False}
    c2 = histosge.read_section("her2st:C2", data_dir=data_dir)
    c3 = histosge.read_section("her2st:C3", data_dir=data_dir)
    c4 = histosge.read_section("her2st:C4", data_dir=data_dir)
    slide = data_dir / "slides" / "her2st_C4.ome.tif"
    with threadpool_limits(1), tempfile.TemporaryDirectory(prefix="histosge-check-") as tmp:
        tmp = Path(tmp)
        meta["tmp"] = str(tmp)  # written as <tmp>: paths of the model files differ between runs

        def step(name):
            print(f"  {name}", file=sys.stderr, flush=True)

        step("superres histosge")
        _output("superres/histosge", histosge.superres(c2, epochs=30, **common), arrays, meta)
        step("superres 9x ridge")
        _output("superres9/ridge", histosge.superres(c2, method="ridge", factor=9, **common), arrays, meta)
        for method, extra in (("histosge", {"epochs": 30}), ("histosge-paper", {"epochs": 5}), ("knn", {}),
                              ("ridge", {}), ("mean", {}), ("stnet", {"epochs": 3}), ("stage", {"epochs": 3})):
            step(f"recover {method}")
            _output(f"recover/{method}", histosge.recover(c2, method=method, seed=1, **extra, **common), arrays,
                    meta)
        step("recover histosge no reliability")
        _output("recover/histosge-norel", histosge.recover(c2, epochs=30, reliability=False, **common), arrays,
                meta)

        train = {k: v for k, v in common.items() if k != "progress"} | {"progress": False}
        step("train image C3+C4")
        image = tasks.train([c3, c4], mode="image", network={"epochs": 30}, **train)
        image.save(tmp / "image.histosge")
        _description("train/image", tmp / "image.histosge", meta)
        arrays["train/image/cv_pcc"] = np.asarray(image.reliability_.cv_pcc)
        step("predict image -> C2 section")
        _output("predict/image-C2", histosge.predict(str(tmp / "image.histosge"), c2, cache_dir=str(cache_dir),
                                                      progress=False), arrays, meta)
        step("predict image -> slide")
        _output("predict/image-slide", histosge.predict(str(tmp / "image.histosge"), str(slide),
                                                         cache_dir=str(cache_dir), progress=False), arrays, meta)

        step("superres with prior")
        _output("superres/prior", histosge.superres(c2, epochs=30, prior=str(tmp / "image.histosge"), **common),
                arrays, meta)
        step("train neighbours with prior")
        nb = tasks.train([c2], prior=str(tmp / "image.histosge"), network={"epochs": 30}, **train)
        nb.save(tmp / "prior.histosge")
        _description("train/neighbours-prior", tmp / "prior.histosge", meta)
        step("predict neighbours+prior -> C2")
        _output("predict/neighbours-prior-C2", histosge.predict(str(tmp / "prior.histosge"), c2,
                                                                cache_dir=str(cache_dir), progress=False),
                arrays, meta)

        step("train paper C2")
        paper = tasks.train([c2], method="histosge-paper", epochs=5, **train)
        paper.save(tmp / "paper.histosge")
        _description("train/paper", tmp / "paper.histosge", meta)
        _output("predict/paper-C2", load_model(tmp / "paper.histosge").predict(c2, cache_dir=str(cache_dir),
                                                                                progress=False), arrays, meta)

        for method, extra, target in (("ridge", {}, c3), ("knn", {}, c2), ("stnet", {"epochs": 3}, c4),
                                      ("mean", {}, c3)):
            step(f"train {method}")
            model = tasks.train([c2], method=method, **extra, **train)
            path = tmp / f"{method}.histosge"
            model.save(path)
            _description(f"train/{method}", path, meta)
            _output(f"predict/{method}", histosge.predict(str(path), target, cache_dir=str(cache_dir),
                                                          progress=False), arrays, meta)
        step("bench (quick): R, G, X, R+ on C2-C4")
        from histosge.benchmark import run

        res = run(data_dir, tmp / "bench", sections=["her2st:C2", "her2st:C3", "her2st:C4"],
                  protocols=["R", "G", "X", "R+"], methods=["mean", "knn", "ridge", "stnet", "histosge",
                                                            "histosge-paper", "ridge+pooled", "histosge+prior"],
                  seeds=[0], encoder="he-stats", quick=True, cache_dir=cache_dir, report=False, progress=False)
        for rec in res.records:
            key = f"bench/{rec['section']}/{rec['protocol']}/{rec.get('prior_from', '')}/{rec['method']}"
            meta[key] = _clean({k: v for k, v in rec.items() if not k.endswith("_seconds")})
    np.savez_compressed(out / "arrays.npz", **{k.replace("/", "|"): v for k, v in arrays.items()})
    text = json.dumps(meta, indent=1, sort_keys=True, default=str).replace(meta.pop("tmp"), "<tmp>")
    (out / "meta.json").write_text(text + "\n")
    print(f"{len(arrays)} arrays, {len(meta)} descriptions/outputs -> {out}", file=sys.stderr)


def _diff(a, b, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'after' if k not in a else 'before'}")
            else:
                _diff(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: {str(a)[:120]!r} -> {str(b)[:120]!r}")


def compare(before: Path, after: Path) -> dict:
    with np.load(before / "arrays.npz") as za, np.load(after / "arrays.npz") as zb:
        a = {k: za[k] for k in za.files}
        b = {k: zb[k] for k in zb.files}
    per_array, problems = {}, []
    for key in sorted(set(a) | set(b)):
        name = key.replace("|", "/")
        if key not in a or key not in b:
            problems.append(f"{name}: only in {'after' if key not in a else 'before'}")
            continue
        x, y = a[key], b[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            problems.append(f"{name}: {x.dtype}{x.shape} -> {y.dtype}{y.shape}")
            continue
        if x.dtype.kind in "fc":
            same = np.array_equal(x, y, equal_nan=True)
            diff = float(np.nanmax(np.abs(x.astype(np.float64) - y))) if x.size and not same else 0.0
        else:
            same, diff = np.array_equal(x, y), 0.0
        per_array[name] = 0.0 if same else (diff if diff else "differs")
        if not same:
            problems.append(f"{name}: max abs difference {diff:.3g}")
    ma = json.loads((before / "meta.json").read_text())
    mb = json.loads((after / "meta.json").read_text())
    for m in (ma, mb):
        m.pop("histosge", None)
        m.pop("tmp", None)
    meta_diffs: list[str] = []
    _diff(ma, mb, "", meta_diffs)
    return {"n_arrays": len(per_array), "arrays_bit_equal": sum(v == 0.0 for v in per_array.values()),
            "array_problems": problems, "description_and_uns_differences": meta_diffs, "per_array": per_array}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("out", type=Path)
    c.add_argument("--data", type=Path, default=Path(os.environ.get("HISTOSGE_DATA", "../shared/data")))
    c.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "histosge-check-cache")
    d = sub.add_parser("compare")
    d.add_argument("before", type=Path)
    d.add_argument("after", type=Path)
    d.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "capture":
        capture(args.out, args.data, args.cache_dir)
        return 0
    res = compare(args.before, args.after)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    print(f"{res['arrays_bit_equal']} of {res['n_arrays']} arrays bit for bit; "
          f"{len(res['description_and_uns_differences'])} description/uns differences")
    for line in res["array_problems"] + res["description_and_uns_differences"]:
        print("  " + line)
    return 0 if not res["array_problems"] and not res["description_and_uns_differences"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
