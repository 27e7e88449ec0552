"""Peak memory of cropping ~2000 patches from a 20k x 20k tiled TIFF (never decoded whole).

Writes a synthetic tiled, zstd-compressed RGB TIFF tile by tile, then, in a fresh child process
per scenario, crops the patches with ``histosge.patches.crop_patches`` and reports the peak
resident memory (``resource.getrusage``) before and after. Results go to
``bench/results/patch_memory.json``.

    .venv/bin/python bench/bench_patch_memory.py            # defaults: 20000 px, 2000 patches

Scenarios: ``scattered`` (centres uniform over the slide: one small read per patch) and
``grid`` (a Visium-like lattice, pitch 1.2 patch sides: patches grouped and read block by block).
The tiles are single colours (compressible), so decode *time* is understated; memory is not,
because every read still decodes whole 256 x 256 tiles into arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_tiff(path: Path, side: int, tile: int) -> None:
    import tifffile

    n = -(-side // tile)
    colours = {v: np.full((tile, tile, 3), v, np.uint8) for v in range(251)}

    def tiles():
        for ty in range(n):
            for tx in range(n):
                yield colours[(ty * 7 + tx * 13) % 251]

    tifffile.imwrite(
        path,
        tiles(),
        shape=(side, side, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="zstd",
        compressionargs={"level": 1},
        photometric="rgb",
        bigtiff=True,
    )


def centres_for(scenario: str, side: int, n: int, patch: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if scenario == "scattered":
        return rng.uniform(0, side, size=(n, 2))
    pitch = 1.2 * patch  # hexagonal lattice, as Visium spots with their patches
    per_row = int(np.ceil(np.sqrt(n)))
    rows, cols = np.divmod(np.arange(n), per_row)
    x = 1000 + cols * pitch + (rows % 2) * pitch / 2
    y = 1000 + rows * pitch * np.sqrt(3) / 2
    return np.c_[x, y]


def child(args) -> None:
    """Runs in a fresh process: import, measure, crop, measure; print one JSON line."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from histosge.patches import crop_patches
    from histosge.read.image import ImageSource

    src = ImageSource(args.child)
    centres = centres_for(args.scenario, src.width, args.n, args.patch)
    before = rss_peak_mib()
    t0 = time.perf_counter()
    out = crop_patches(src, centres, 1.0, args.patch, args.out_size)
    seconds = time.perf_counter() - t0
    after = rss_peak_mib()
    print(
        json.dumps(
            {
                "scenario": args.scenario,
                "n_patches": len(out),
                "patch_side_px": args.patch,
                "out_size_px": args.out_size,
                "patches_mib": round(out.nbytes / 2**20, 1),
                "peak_rss_before_crop_mib": round(before, 1),
                "peak_rss_after_crop_mib": round(after, 1),
                "peak_rss_increase_mib": round(after - before, 1),
                "increase_beyond_output_mib": round(after - before - out.nbytes / 2**20, 1),
                "seconds": round(seconds, 2),
                "patches_per_second": round(len(out) / seconds, 1),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=20_000, help="image side in pixels")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--n", type=int, default=2000, help="patches per scenario")
    p.add_argument("--patch", type=int, default=224, help="patch side in image pixels")
    p.add_argument("--out-size", type=int, default=224)
    p.add_argument("--out", type=Path, default=HERE / "results" / "patch_memory.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--scenario", default="scattered", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slide.tif"
        t0 = time.perf_counter()
        write_tiff(path, args.side, args.tile)
        write_s = time.perf_counter() - t0
        runs = []
        for scenario in ("scattered", "grid"):
            cmd = [sys.executable, __file__, "--child", str(path), "--scenario", scenario, "--n", str(args.n)]
            cmd += ["--patch", str(args.patch), "--out-size", str(args.out_size)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        file_mib = path.stat().st_size / 2**20
    result = {
        "what": "peak RSS of crop_patches on a tiled TIFF (ImageSource: tifffile tiles, 64 MB tile cache)",
        "image": {
            "width": args.side,
            "height": args.side,
            "tile": args.tile,
            "compression": "zstd",
            "file_mib": round(file_mib, 1),
            "decoded_whole_mib": round(args.side * args.side * 3 / 2**20, 1),
            "write_seconds": round(write_s, 1),
        },
        "runs": runs,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "note": "peak_rss_before_crop includes importing histosge (torch, scanpy); the increase is the "
        "cropping, of which patches_mib is the returned array itself",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
