"""he-stats speed, old against new, and the reading floor, side by side in one run (issue 17).

Two inputs:

- ``dlpfc:151673``: every spot ``superres`` encodes (3,639 measured + 10,562 generated at 4x) on
  the section's 600 px lowres PNG (a patch is 9 px, upsampled to 128);
- a 40,000 x 40,000 px slide built here: the her2st C4 OME-TIFF (0.687 um/px, 5 levels) tiled
  periodically into a pyramidal, JPEG-tiled OME-TIFF in a temporary folder, with a spot every
  200 um (legacy ST pitch, 100 um spots: 291 px patches at ``patch_scale`` 2).

For each, in a fresh process per measurement (its peak memory is its own, worker processes
included):

- ``read``: the new reading path alone: patches decoded and cropped (from the pyramid level
  ``extract`` picks; shrunk on the CPU where it would be), no encoder: the floor;
- ``new``: ``encode.extract`` with he-stats as shipped (threads; no worker processes);
- ``new_1thread``: the same with ``HISTOSGE_THREADS=1``;
- ``new_2processes``: the new features computed in two worker processes instead of threads (the
  question whether processes are still worth it);
- ``old``: today's pipeline before issue 17, rebuilt from its parts: per-patch reads from level 0
  (tifffile's zarr view for the TIFF), torch preprocessing on every core, and the one-patch-at-a-
  time features (``tests/hestats_reference.py``) split over one forkserver worker per core, as
  ``histosge.encode.handcrafted.compute`` did. On the slide it runs on a band of ``--old-spots``
  spots (it would take too long on all), and ``new`` runs on the same band for the ratio.

Warm-up (the worker pool's start, numba loading its compiled kernels) is timed apart and left out
of the rates. Besides wall-clock spots/s, each run reports the CPU time it used (all threads, worker
processes included) per spot: on a machine shared with other jobs the wall clock says how fast a
run was, the CPU time what the work costs. The old and new features are compared on the spots both
computed (on the slide the new ones read from level 0 for that check, since the new path reads
level 1 there).

    python bench/bench_hestats.py --data ../shared/data --out bench/results/hestats_speed.json
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
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for extra in (ROOT / "src", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

C4_MPP = 0.687  # um per pixel of slides/her2st_C4.ome.tif
PITCH_UM, SPOT_UM = 200.0, 100.0  # legacy Spatial Transcriptomics


# -- inputs ------------------------------------------------------------------------------------------
def dlpfc_inputs(data: str, section: str, out: Path) -> dict:
    """Centres of every spot superres encodes on the section (measured + generated at 4x)."""
    import histosge
    from histosge import geometry, keys

    adata = histosge.read_section(section, data_dir=data)
    rows, cols = (adata.obs[k].to_numpy(float) for k in ("array_row", "array_col"))
    grid = keys.grid(adata)
    xy = np.asarray(adata.obsm["spatial"], np.float64)
    gen_xy, _ = geometry.place_generated(rows, cols, xy, geometry.dense_points(rows, cols, grid, 4))
    centres = np.vstack([xy, gen_xy])
    np.save(out / "dlpfc_centres.npy", centres)
    return {"kind": "section", "section": section, "data": data, "centres": str(out / "dlpfc_centres.npy"),
            "spot_diameter": keys.spot_diameter_px(adata), "n_measured": len(xy), "n_generated": len(gen_xy)}


def build_slide(data: str, side: int, path: Path) -> dict:
    """A ``side`` x ``side`` pyramidal OME-TIFF (512 px JPEG tiles) tiling her2st C4 periodically:
    level k of the big slide is C4's own level k repeated."""
    import tifffile

    from histosge.read.image import ImageSource

    c4 = ImageSource(Path(data) / "slides" / "her2st_C4.ome.tif")
    levels = [c4.read_region(0, 0, w, h, level=k) for k, (w, h) in enumerate(c4.level_dimensions)]
    tile = 512

    def tiles(src: np.ndarray, width: int, height: int):
        h, w = src.shape[:2]
        for y0 in range(0, height, tile):
            ys = np.arange(y0, y0 + tile) % h
            band = src[ys]
            for x0 in range(0, width, tile):
                yield band[:, np.arange(x0, x0 + tile) % w]

    sizes = [(-(-side // 2**k), -(-side // 2**k)) for k in range(len(levels))]
    t0 = time.perf_counter()
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        opts = {"tile": (tile, tile), "compression": "jpeg", "compressionargs": {"level": 90}, "photometric": "rgb",
                "dtype": np.uint8}
        w, h = sizes[0]
        tw.write(tiles(levels[0], w, h), shape=(h, w, 3), subifds=len(levels) - 1,
                 metadata={"axes": "YXS", "PhysicalSizeX": C4_MPP, "PhysicalSizeY": C4_MPP}, **opts)
        for k in range(1, len(levels)):
            w, h = sizes[k]
            tw.write(tiles(levels[k], w, h), shape=(h, w, 3), subfiletype=1, **opts)
    built = time.perf_counter() - t0
    pitch, diameter = PITCH_UM / C4_MPP, SPOT_UM / C4_MPP
    axis = np.arange(pitch / 2, side, pitch)
    centres = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)  # rows of spots, top to bottom
    np.save(path.with_suffix(".centres.npy"), centres)
    return {"kind": "slide", "path": str(path), "centres": str(path.with_suffix(".centres.npy")),
            "spot_diameter": diameter, "side_px": side, "spots_per_row": len(axis), "levels": sizes,
            "file_mb": path.stat().st_size / 2**20, "build_s": built}


# -- measurements (each in a child process) -------------------------------------------------------------
def _source(spec: dict):
    from histosge.read.image import ImageSource, image_for

    if spec["kind"] == "slide":
        return ImageSource(spec["path"]), 1.0
    import histosge

    return image_for(histosge.read_section(spec["section"], data_dir=spec["data"]))


def _descendants(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                kids += [int(entry), *_descendants(int(entry))]
    return kids


def _peak_mb(pid: int) -> float:
    """VmHWM: the process's own peak resident memory."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return 0.0


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def _family() -> list[int]:
    return [os.getpid(), *_descendants(os.getpid())]


class _OldTiff:
    """Level-0 region reads through tifffile's zarr view, as ``ImageSource`` did before issue 17."""

    def __init__(self, path: str):
        import tifffile
        import zarr

        self.tiff = tifffile.TiffFile(path)
        z = zarr.open(self.tiff.series[0].aszarr(level=0), mode="r")
        self.z = z if hasattr(z, "shape") else z["0"]
        self.height, self.width = self.z.shape[:2]

    def read_region(self, x0, y0, w, h, *, level=0):
        out = np.full((h, w, 3), 255, np.uint8)
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, self.width), min(y0 + h, self.height)
        if ix1 > ix0 and iy1 > iy0:
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = np.asarray(self.z[iy0:iy1, ix0:ix1])
        return out


def _pool(n: int, preload: str):
    """Worker processes as the old he-stats made them: forked from a server that imported ``preload``."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([preload])
    # the initialiser is not the old code's: it only keeps a bench killed midway from leaving workers
    return ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_die_with_fork_server)


def _die_with_fork_server() -> None:
    """Pool worker initialiser: die with the fork server (which exits with the bench process)."""
    from histosge.encode.extract import die_with_parent

    die_with_parent(os.getppid())


def _loop(batches, preprocess, compute, torch_threads: int) -> tuple[np.ndarray, float]:
    import torch

    torch.set_num_threads(torch_threads)
    out, t0 = [], time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            x = preprocess(torch.as_tensor(np.asarray(batch)))
            out.append(compute(x.clamp(0, 1).permute(0, 2, 3, 1).contiguous().numpy()))
    return np.concatenate(out), time.perf_counter() - t0


def child(phase: str, spec: dict, ids: np.ndarray, save: str | None) -> dict:
    import torch

    from histosge import encode
    from histosge.encode.extract import PatchBatches, spatial_order
    from histosge.patches import patch_side_px, read_level

    source, scale = _source(spec)
    centres = np.load(spec["centres"])[ids]
    enc = encode.create("he-stats")
    side = patch_side_px(spec["spot_diameter"], scale, 2.0)
    level = read_level(source, side, enc.input_size)
    cpus = len(os.sched_getaffinity(0))
    result = {"phase": phase, "spots": int(len(centres)), "side_px": int(side), "level": int(level)}
    warm = time.perf_counter()
    if phase in ("new", "new_1thread", "read"):
        from histosge.encode.handcrafted import features_batch

        features_batch(np.random.default_rng(0).random((8, 128, 128, 3)))  # numba loads its kernels
        result["warmup_s"] = time.perf_counter() - warm
        if phase == "read":
            order = spatial_order(source, centres, scale, side, level)
            batches = PatchBatches(source, centres[order], scale, side, enc.input_size, level=level)
            t0, cpu0 = time.perf_counter(), _cpu_s(_family())
            pixels = sum(int(batches[k].size) for k in range(len(batches)))
            seconds, cpu = time.perf_counter() - t0, _cpu_s(_family()) - cpu0
            result["patch_bytes"] = pixels
            feats = None
        else:
            t0, cpu0 = time.perf_counter(), _cpu_s(_family())
            feats = encode.extract(source, centres, scale, spec["spot_diameter"], encoder=enc, cache_dir=False,
                                   progress=False, level=int(spec.get("force_level", level)))
            seconds, cpu = time.perf_counter() - t0, _cpu_s(_family()) - cpu0
        result["threads"] = int(os.environ.get("HISTOSGE_THREADS") or cpus)
    elif phase == "new_2processes":
        from histosge.encode.handcrafted import features_batch

        pool = _pool(2, "histosge._hestats")
        list(pool.map(features_batch, [np.zeros((8, 128, 128, 3), np.float32)] * 2))
        result["warmup_s"] = time.perf_counter() - warm
        order = spatial_order(source, centres, scale, side, level)
        batches = PatchBatches(source, centres[order], scale, side, enc.input_size, level=level)

        def compute(arr):
            halves = np.array_split(arr, 2)
            return np.concatenate(list(pool.map(features_batch, halves, [1, 1])))

        cpu0 = _cpu_s(_family())
        feats, seconds = _loop((batches[k] for k in range(len(batches))), enc.preprocess, compute, 1)
        cpu = _cpu_s(_family()) - cpu0
        feats[order] = feats.copy()
        result["helper_peak_mb"] = [_peak_mb(p) for p in _descendants(os.getpid())]
        pool.shutdown()
    elif phase == "old":
        from hestats_reference import reference_batch

        from histosge.patches import PatchDataset

        old_source = _OldTiff(spec["path"]) if spec["kind"] == "slide" else source
        pool = _pool(cpus, "hestats_reference")
        list(pool.map(reference_batch, [np.zeros((8, 128, 128, 3), np.float32)] * cpus))
        result["warmup_s"] = time.perf_counter() - warm
        out_size = enc.input_size if side > 2 * enc.input_size else None
        dataset = PatchDataset(old_source, centres, scale, side, out_size, resample="bicubic")
        loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=False, num_workers=0,
                                             collate_fn=lambda items: torch.from_numpy(np.stack(items)))

        def compute(arr):
            parts = np.array_split(np.asarray(arr, np.float32), min(cpus, max(1, len(arr) // 8)))
            return np.concatenate(list(pool.map(reference_batch, parts)))

        cpu0 = _cpu_s(_family())
        feats, seconds = _loop(loader, enc.preprocess, compute, cpus)
        cpu = _cpu_s(_family()) - cpu0
        result["helper_peak_mb"] = [_peak_mb(p) for p in _descendants(os.getpid())]
        result["workers"] = cpus
        pool.shutdown()
    else:
        raise SystemExit(f"unknown phase {phase}")
    result["seconds"] = seconds
    result["spots_per_s"] = len(centres) / seconds
    result["cpu_s"] = cpu  # this process and its workers, every thread: what the work costs, whatever the load
    result["cpu_ms_per_spot"] = 1000 * cpu / len(centres)
    result["peak_mb"] = _peak_mb(os.getpid())
    result["peak_total_mb"] = result["peak_mb"] + sum(result.get("helper_peak_mb", []))
    if save and feats is not None:
        np.save(save, feats)
    return result


def run_child(phase: str, spec: dict, ids: np.ndarray, tmp: Path, env: dict | None = None, save: bool = False,
              tag: str = "") -> dict:
    ids_path = tmp / f"ids_{spec['kind']}_{phase}{tag}.npy"
    np.save(ids_path, ids)
    feats = tmp / f"feats_{spec['kind']}_{phase}{tag}.npy" if save else None
    spec_path = tmp / f"spec_{spec['kind']}{tag}.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, __file__, "--child", phase, str(spec_path), str(ids_path)] + ([str(feats)] if feats else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if res.returncode != 0:
        sys.exit(f"{phase} on {spec['kind']} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if feats:
        out["features"] = str(feats)
    print(f"  {spec['kind']:7s} {phase + tag:18s} {out['spots']:6d} spots  {out['spots_per_s']:8.0f} spots/s  "
          f"{out['cpu_ms_per_spot']:7.2f} CPU ms/spot  peak {out['peak_total_mb']:6.0f} MB", flush=True)
    return out


def compare(a: dict, b: dict) -> float:
    fa, fb = np.load(a["features"]), np.load(b["features"])
    return float(np.abs(fa - fb).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--section", default="dlpfc:151673")
    ap.add_argument("--slide-side", type=int, default=40_000, help="side of the built slide in pixels")
    ap.add_argument("--old-spots", type=int, default=2000, help="spots the old pipeline encodes on the slide")
    ap.add_argument("--section-spots", type=int, default=0, help="limit the section's spots (0: all)")
    ap.add_argument("--out", default=str(HERE / "results" / "hestats_speed.json"))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        phase, spec_path, ids_path, *save = args.child
        print(json.dumps(child(phase, json.loads(Path(spec_path).read_text()), np.load(ids_path),
                               save[0] if save else None)))
        return

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    record: dict = {"date": date.today().isoformat(),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
                    "command": "python bench/bench_hestats.py " + " ".join(sys.argv[1:]),
                    "load_average_before": load_before}
    with tempfile.TemporaryDirectory(prefix="bench_hestats_") as tmp_name:
        tmp = Path(tmp_name)
        print(f"section {args.section}:", flush=True)
        spec = dlpfc_inputs(args.data, args.section, tmp)
        n = len(np.load(spec["centres"]))
        ids = np.arange(n if not args.section_spots else min(n, args.section_spots))
        runs = {phase: run_child(phase, spec, ids, tmp, save=phase in ("new", "old"))
                for phase in ("read", "old", "new", "new_2processes")}
        runs["new_1thread"] = run_child("new_1thread", spec, ids, tmp, env={"HISTOSGE_THREADS": "1"})
        section = {"input": {k: v for k, v in spec.items() if k not in ("centres", "data")}, "runs": runs,
                   "max_abs_feature_difference_old_new": compare(runs["old"], runs["new"])}
        record["section"] = _summary(section)

        print(f"slide {args.slide_side} x {args.slide_side} px (her2st C4 tiled):", flush=True)
        slide = build_slide(args.data, args.slide_side, tmp / "slide.ome.tif")
        n = len(np.load(slide["centres"]))
        band = np.arange(min(n, args.old_spots))  # the top rows of spots
        runs = {"read": run_child("read", slide, np.arange(n), tmp),
                "new": run_child("new", slide, np.arange(n), tmp),
                "new_1thread": run_child("new_1thread", slide, np.arange(n), tmp, env={"HISTOSGE_THREADS": "1"})}
        band_runs = {"old": run_child("old", slide, band, tmp, save=True, tag="_band"),
                     "new": run_child("new", slide, band, tmp, tag="_band"),
                     "read": run_child("read", slide, band, tmp, tag="_band")}
        level0 = run_child("new", {**slide, "force_level": 0}, band, tmp, save=True, tag="_band_level0")
        slide_record = {"input": {k: v for k, v in slide.items() if k not in ("centres", "path")}, "runs": runs,
                        "band_runs": band_runs,
                        "max_abs_feature_difference_old_new_level0": compare(band_runs["old"], level0)}
        record["slide"] = _summary(slide_record)
    record["load_average_after"] = os.getloadavg()
    record["wall_s"] = time.perf_counter() - t_start
    for part in ("section", "slide"):
        for runs_key in ("runs", "band_runs"):
            for run in record[part].get(runs_key, {}).values():
                run.pop("features", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps({k: record[k]["ratios"] for k in ("section", "slide")}, indent=2))


def _summary(part: dict) -> dict:
    """Ratios the issue asks for: new over old (same spots), and reading alone over new."""
    runs = part["runs"]
    old = part.get("band_runs", runs)["old"]
    new_same = part.get("band_runs", runs)["new"]
    part["ratios"] = {
        "new_over_old": new_same["spots_per_s"] / old["spots_per_s"],
        "new_over_old_cpu": old["cpu_ms_per_spot"] / new_same["cpu_ms_per_spot"],
        "reading_over_new": runs["read"]["spots_per_s"] / runs["new"]["spots_per_s"],
        "threads_over_1thread": runs["new"]["spots_per_s"] / runs["new_1thread"]["spots_per_s"],
        "spots_per_s": {name: run["spots_per_s"] for name, run in runs.items()},
        "cpu_ms_per_spot": {name: run["cpu_ms_per_spot"] for name, run in runs.items()},
        "peak_total_mb": {name: run["peak_total_mb"] for name, run in runs.items()},
    }
    if "new_2processes" in runs:
        part["ratios"]["threads_over_2processes"] = runs["new"]["spots_per_s"] / runs["new_2processes"]["spots_per_s"]
    return part


if __name__ == "__main__":
    main()
