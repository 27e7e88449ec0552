"""Predicting whole H&E slides: wall time, spots per second and peak memory by slide size.

Why: issue 13 asks that ``histosge predict`` on a slide of at least 40,000 x 40,000 px stays
under 2 GB of memory whatever the slide's size, and costs no more per 1,000 spots than
``superres``. The slides are built here (``bench_hestats.build_slide``: her2st C4's pyramidal
OME-TIFF repeated, 0.687 um/px, JPEG tiles), the model is the image-mode model of C2 + C3 (what
``histosge train her2st:C2 her2st:C3 --mode image`` writes), and each prediction runs as
``histosge predict MODEL SLIDE -o OUT`` in a fresh process with an empty feature cache.

    python bench/bench_predict_slide.py --data ../shared/data --sides 10000,40000 \
        --out bench/results/predict_slide.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hestats import build_slide  # noqa: E402


def _train(data: str, path: Path) -> float:
    import histosge
    from histosge.model import HisToSGE

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sections = [histosge.read_section(s, data_dir=data) for s in ("her2st:C2", "her2st:C3")]
    HisToSGE("image").fit(sections, progress=False).save(path)
    return time.perf_counter() - t0


def _predict(model: Path, slide: Path, out: Path, cache: Path, factor: int | None) -> dict:
    """``histosge predict`` in a child process: wall time, peak memory (the child's max RSS)."""
    cmd = [sys.executable, "-m", "histosge.cli", "predict", str(model), str(slide), "-o", str(out),
           "--cache-dir", str(cache), "--quiet", *(["--factor", str(factor)] if factor else [])]
    env = {**os.environ, "HISTOSGE_PROGRESS_INTERVAL": "30"}
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict failed:\n{log.read_text()[-2000:]}")
    peak = usage.ru_maxrss  # KiB
    import anndata as ad

    res = ad.read_h5ad(out, backed="r")
    n = int(res.n_obs)
    seconds = res.uns["histosge"].get("seconds")
    res.file.close()
    return {"spots": n, "wall_s": round(wall, 1), "predict_s": round(float(seconds), 1) if seconds else None,
            "spots_per_s": round(n / wall, 1), "s_per_1000_spots": round(1000 * wall / n, 2),
            "peak_rss_mb": round(peak / 1024, 1), "output_mb": round(out.stat().st_size / 2**20, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--sides", default="10000,40000", help="slide sides in level-0 pixels")
    ap.add_argument("--factors", default="1", help="1 (training pitch), 4, 9 or 16, comma-separated")
    ap.add_argument("--tmp", default=None, help="folder for the slides (default: a temporary folder)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sides = [int(s) for s in args.sides.split(",")]
    factors = [int(f) for f in args.factors.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        model = tmp / "c2c3.histosge"
        train_s = _train(args.data, model)
        print(f"model trained in {train_s:.0f} s", file=sys.stderr)
        for side in sides:
            slide = tmp / f"slide_{side}.ome.tif"
            spec = build_slide(args.data, side, slide)
            for factor in factors:
                # a new child process each time: peak RSS must be measured from a clean slate
                r = _predict(model, slide, tmp / f"out_{side}_{factor}.h5ad", tmp / f"cache_{side}_{factor}",
                             factor if factor != 1 else None)
                r = {"side_px": side, "slide_mb": round(spec["file_mb"], 1), "factor": factor, **r,
                     "load_average_1min": round(os.getloadavg()[0], 1)}  # a shared machine: say how busy
                print(json.dumps(r), file=sys.stderr)
                rows.append(r)
            slide.unlink()
    ref = Path(__file__).resolve().parent / "results" / "superres.json"
    superres = json.loads(ref.read_text()) if ref.exists() else None
    result = {"machine": f"{os.cpu_count()} CPU cores", "model": "image mode, he-stats, her2st C2 + C3",
              "train_s": round(train_s, 1), "rows": rows}
    if superres:  # superres dlpfc:151673 with a cold cache, as bench/bench_superres.py last measured it
        cold = superres["cold_cache"]
        n = cold["n_measured"] + cold["n_generated"]
        result["superres_reference"] = {"date": superres.get("date"), "spots": n, "total_s": round(cold["total_s"], 1),
                                        "s_per_1000_spots": round(1000 * cold["total_s"] / n, 2)}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
