"""Cohort throughput on this machine: slides/hour here and on a local Ray cluster with 2 workers.

Why: ``histosge predict MODEL SLIDES... --out-dir OUT [--ray]`` is meant for hundreds of slides.
This measures what one slide costs, where the time goes (reading + tissue + lattice, encoding,
the model and the write) and what Ray adds per slide, so docs/SCALING.md can extrapolate.

    python bench/cohort_throughput.py --data ../shared/data --out bench/results/cohort_throughput.json

Slides: the 8 mirror images / rotations of ``slides/her2st_C4.ome.tif`` (real H&E, 9916 x 9278 px,
0.687 um/px), each written as a JPEG-tiled pyramidal OME-TIFF: the same work per slide, different
bytes (so the content fingerprint never lets one reuse another's output). Model: an image-mode
``HisToSGE`` with default settings fitted on her2st C2 + C3 (or ``--model``). Runs, each in a
fresh process with a cold feature cache unless said: (1) here, one slide after the other; (2) the
same again with the features cached (what the slide costs without encoding); (3) ``--ray`` with
2 workers on a Ray instance started by the run. Outputs of (1) and (3) are compared array by array.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_slides(data: Path, folder: Path, n: int) -> list[Path]:
    """The ``n`` (<= 8) dihedral variants of the shipped slide, as JPEG-tiled pyramidal OME-TIFFs."""
    import tifffile

    from histosge.read.image import ImageSource

    src = data / "slides" / "her2st_C4.ome.tif"
    mpp = ImageSource(src).mpp
    img = tifffile.imread(src, level=0)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        v = np.rot90(img, k % 4)
        v = np.ascontiguousarray(v[:, ::-1] if k >= 4 else v)
        path = folder / f"c4_v{k}.ome.tif"
        if not path.exists():
            with tifffile.TiffWriter(path, ome=True, bigtiff=True) as tw:
                tw.write(v, tile=(512, 512), subifds=3, photometric="rgb", compression="jpeg",
                         metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp})
                for lev in range(1, 4):
                    tw.write(v[:: 2**lev, :: 2**lev], tile=(512, 512), subfiletype=1, photometric="rgb",
                             compression="jpeg")
        out.append(path)
    return out


def train_model(data: Path, path: Path, seed: int) -> None:
    import histosge
    from histosge.model import HisToSGE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = [histosge.read_section(s, data_dir=data) for s in ("her2st:C2", "her2st:C3")]
    HisToSGE("image", seed=seed).fit(train, progress=False).save(path)


def run_one(args) -> dict:
    """One cohort run in this (fresh) process; its result as a dict."""
    from histosge.cohort import predict_cohort

    t0 = time.perf_counter()
    on_ray = args.run_one == "ray"
    res = predict_cohort(args.model, [args.slides_dir], args.run_out, factor=args.factor or None, cache_dir=args.cache,
                         ray=True if on_ray else None, workers=args.workers if on_ray else None, progress=False)
    wall = time.perf_counter() - t0
    recs = [res.records[s] for s in res.slides]
    return {"mode": args.run_one, "wall_s": round(wall, 1), "outcomes": res.outcomes,
            "driver_peak_mb": round(_peak_mb()), "timings": res.timings,
            "slides": [{k: r.get(k) for k in ("slide", "status", "spots", "seconds", "seconds_read", "seconds_predict",
                                              "peak_memory_mb", "output_bytes", "worker", "error")} for r in recs]}


def _child(args, mode: str, out: Path, cache: Path) -> dict:
    cmd = [sys.executable, __file__, "--run-one", mode, "--model", str(args.model), "--slides-dir",
           str(args.slides_dir), "--run-out", str(out), "--cache", str(cache), "--factor", str(args.factor),
           "--workers", str(args.workers)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def output_breakdown(path: Path) -> dict:
    """Bytes on disk of an output by part: the expression (X), the thumbnail(s), the rest."""
    import h5py

    parts = {"X": 0, "thumbnail": 0, "rest": 0}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            key = "X" if name == "X" else "thumbnail" if "/images/" in name else "rest"
            parts[key] += obj.id.get_storage_size()

    with h5py.File(path) as f:
        f.visititems(visit)
    return {k: round(v / 1e6, 2) for k, v in parts.items()}


def _summary(run: dict, n: int) -> dict:
    done = [s for s in run["slides"] if s["status"] == "done"]
    spots = [s["spots"] for s in done]
    out = {"wall_s": run["wall_s"], "slides_per_hour": round(3600 * n / run["wall_s"], 1),
           "seconds_per_slide_mean": round(float(np.mean([s["seconds"] for s in done])), 2),
           "read_s_per_slide_mean": round(float(np.mean([s["seconds_read"] for s in done])), 2),
           "predict_s_per_slide_mean": round(float(np.mean([s["seconds_predict"] for s in done])), 2),
           "spots_per_slide_mean": round(float(np.mean(spots)), 1),
           "peak_memory_mb_per_slide_max": max(s["peak_memory_mb"] for s in done),
           "output_mb_per_slide_mean": round(float(np.mean([s["output_bytes"] for s in done])) / 1e6, 2),
           "output_mb_per_10k_spots": round(sum(s["output_bytes"] for s in done) / sum(spots) * 1e4 / 1e6, 2),
           "driver_peak_mb": run["driver_peak_mb"],
           "failed": [s["slide"] for s in run["slides"] if s["status"] != "done"]}
    t = run.get("timings") or {}
    if t.get("workers"):
        per = t.get("slides", {}).values()
        over = [v.get("prepare_overhead_s", 0) + v.get("finish_overhead_s", 0) for v in per]
        out.update({
            "ray_start_s": t["ray_start_s"], "workers": t["workers"], "workers_ready_s": t["workers_ready_s"],
            "slides_per_hour_after_start": round(3600 * n / (run["wall_s"] - t["ray_start_s"] - t["workers_ready_s"]),
                                                 1),
            "ray_overhead_s_per_slide_mean": round(float(np.mean(over)), 3),
            "ray_overhead_s_per_slide_max": round(float(np.max(over)), 3),
            "worker_peak_mb": {w["worker"]: w["peak_rss_mb"] for w in t.get("worker_info", [])},
        })
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--n", type=int, default=8, help="slides (at most 8)")
    ap.add_argument("--factor", type=int, default=4,
                    help="spots 4, 9 or 16 times denser than the model's pitch (0: at its pitch)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default=None, help="an image-mode model file (default: fit one on C2 + C3)")
    ap.add_argument("--work", default=None, help="folder for slides, outputs and caches (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--slides-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_one:
        print(json.dumps(run_one(args)))
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    work = Path(args.work or tempfile.mkdtemp(prefix="histosge-cohort-bench-"))
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    slides = make_slides(Path(args.data), work / "slides", args.n)
    args.slides_dir = work / "slides"
    t_slides = time.perf_counter() - t0
    if args.model is None:
        args.model = work / "model.histosge"
        if not args.model.exists():
            train_model(Path(args.data), args.model, args.seed)
    runs = {
        "local": _child(args, "local", work / "out_local", work / "cache_local"),
        "local_features_cached": _child(args, "local", work / "out_local_warm", work / "cache_local"),
        "ray": _child(args, "ray", work / "out_ray", work / "cache_ray"),
    }
    import anndata as ad

    identical = all(np.array_equal(ad.read_h5ad(work / "out_local" / f"{p.name.split('.')[0]}.h5ad").X,
                                   ad.read_h5ad(work / "out_ray" / f"{p.name.split('.')[0]}.h5ad").X) for p in slides)
    summary = {k: _summary(v, len(slides)) for k, v in runs.items()}
    first = runs["local"]["slides"][0]
    summary["local"]["output_breakdown_mb"] = {"slide": first["slide"], "spots": first["spots"],
                                               **output_breakdown(work / "out_local" / f"{first['slide']}.h5ad")}
    loc, warm, ray = summary["local"], summary["local_features_cached"], summary["ray"]
    result = {
        "command": "python bench/cohort_throughput.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in load0],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "slides": {"n": len(slides), "source": "slides/her2st_C4.ome.tif, 8 rotations/mirrors, JPEG-tiled OME-TIFF",
                   "bytes_each": [p.stat().st_size for p in slides], "factor": args.factor,
                   "prepare_s": round(t_slides, 1)},
        "summary": summary,
        "derived": {
            "encoding_s_per_slide": round(loc["predict_s_per_slide_mean"] - warm["predict_s_per_slide_mean"], 2),
            "ray_vs_local_speed": round(ray["slides_per_hour"] / loc["slides_per_hour"], 3),
            "local_and_ray_outputs_identical": bool(identical),
        },
        "runs": runs,
    }
    print(json.dumps({"summary": summary, "derived": result["derived"]}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
