"""Our slide reader against tiffslide, tiatoolbox's WSIReader and OpenSlide on the shipped slides.

Why: ``histosge.read.image`` decodes TIFF tiles itself (tifffile's codecs, a cache of decoded
tiles); issue 28 asks whether a library does it as fast, and to adopt what is at least as fast.
Each reader runs in a child process of its own (imports, memory and caches apart) and reads the
same patches: ``--patches`` 224 px squares at level 0, centred on random points of the slide
(seeded), first in random order and then in reading order (sorted by row, then column: the order
``encode.extract`` reads a section's spots in). Reported per reader and slide: the time to open,
the seconds per patch in each order, the peak resident memory of the child (``VmHWM``: at its
start, after opening the slide, after the reads; our reference patches are read in the parent, so a
reader's peak is its own), and the largest pixel difference from ours on the patches that
lie inside the image (the same decoder should give 0; outside it ours reads white glass, others
black or transparent).

The readers that are not installed are skipped and named. Not dependencies of histosge: install
them anywhere and put them on PYTHONPATH for this script only, e.g.::

    pip install --no-deps --target /tmp/readers tiffslide tiatoolbox openslide-python openslide-bin \\
        opencv-python-headless SimpleITK defusedxml universal-pathlib pathlib_abc dask toolz cloudpickle \\
        partd locket importlib_metadata lazy_importer shapely
    PYTHONPATH=/tmp/readers:src python bench/image_readers.py --out bench/results/image_readers.json

Timings depend on what else the machine runs: the record holds ``os.getloadavg()`` before and
after each reader; rerun on a quiet machine before quoting a speed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

SLIDES = ("slides/her2st_C4.ome.tif", "slides/aperio_small.svs")
READERS = ("histosge", "tiffslide", "tiatoolbox", "openslide")
SIDE = 224


def _points(width: int, height: int, n: int, seed: int) -> list[tuple[int, int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    xs = rng.integers(0, max(width, 1), n)
    ys = rng.integers(0, max(height, 1), n)
    return [(int(x) - SIDE // 2, int(y) - SIDE // 2) for x, y in zip(xs, ys, strict=True)]


def _opener(reader: str, path: str):
    """(read(x, y) -> uint8 RGB (SIDE, SIDE, 3), close) of ``reader`` on ``path``, at level 0."""
    import numpy as np

    if reader == "histosge":
        from histosge.read.image import ImageSource

        src = ImageSource(path)
        return (lambda x, y: src.read_region(x, y, SIDE, SIDE)), src.close
    if reader == "tiffslide":
        import tiffslide

        slide = tiffslide.TiffSlide(path)
        return (lambda x, y: np.asarray(slide.read_region((x, y), 0, (SIDE, SIDE), as_array=True))[..., :3]), \
            slide.close
    if reader == "openslide":
        import openslide

        slide = openslide.OpenSlide(path)

        def read(x, y):  # RGBA, transparent outside the scanned area: onto white, as ours
            rgba = np.asarray(slide.read_region((x, y), 0, (SIDE, SIDE)), np.float32)
            alpha = rgba[..., 3:4] / 255.0
            return (rgba[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)

        return read, slide.close
    if reader == "tiatoolbox":
        from tiatoolbox.wsicore.wsireader import WSIReader

        wsi = WSIReader.open(path)
        return (lambda x, y: np.asarray(wsi.read_rect((x, y), (SIDE, SIDE), resolution=0, units="level"))[..., :3]), \
            (lambda: None)
    raise ValueError(reader)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``: its own, from its start; ``ru_maxrss`` of
    a spawned child keeps its parent's peak across ``exec``)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def _child(reader: str, path: str, points, inside, reference, queue) -> None:
    """Time and measure ``reader`` alone: the reference patches come from the parent, so this
    process's peak memory holds the reader's imports, caches and reads, nothing of ours."""
    try:
        import numpy as np

        rss_start = _peak_rss_mb()
        ordered = sorted(points, key=lambda p: (p[1], p[0]))
        t0 = time.perf_counter()
        read, close = _opener(reader, path)
        t_open = time.perf_counter() - t0
        rss_open = _peak_rss_mb()
        times = {}
        for label, pts in (("random", points), ("reading_order", ordered)):
            t = time.perf_counter()
            for x, y in pts:
                read(x, y)
            times[label] = (time.perf_counter() - t) / len(pts)
        diff = max((int(np.abs(read(x, y).astype(np.int16) - r.astype(np.int16)).max())
                    for (x, y), r in zip(inside, reference, strict=True)), default=None)
        close()
        queue.put({"open_s": t_open, "s_per_patch_random": times["random"],
                   "s_per_patch_reading_order": times["reading_order"],
                   "peak_rss_mb_at_start": rss_start, "peak_rss_mb_after_open": rss_open,
                   "peak_rss_mb": _peak_rss_mb(),
                   "max_abs_diff_from_histosge": diff})
    except ImportError as err:
        queue.put({"skipped": f"not installed ({err})"})
    except Exception as err:  # a reader that cannot read the file says so in the record
        queue.put({"error": f"{type(err).__name__}: {err}"})


def _reference(path: str, n: int, seed: int):
    """The patches' corners, those inside the image, and our reader's pixels there (read in the
    parent, which is not measured)."""
    from histosge.read.image import ImageSource

    ref = ImageSource(path)
    width, height = ref.width, ref.height
    points = _points(width, height, n, seed)
    inside = [(x, y) for x, y in points if 0 <= x <= width - SIDE and 0 <= y <= height - SIDE][:50]
    reference = [ref.read_region(x, y, SIDE, SIDE) for x, y in inside]
    ref.close()
    return width, height, points, inside, reference


def measure(data: Path, readers: list[str], n: int, seed: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for slide in SLIDES:
        path = str(data / slide)
        width, height, points, inside, reference = _reference(path, n, seed)
        for reader in readers:
            load_before = os.getloadavg()
            queue = ctx.Queue()
            proc = ctx.Process(target=_child, args=(reader, path, points, inside, reference, queue))
            proc.start()
            result = queue.get(timeout=1800)
            proc.join()
            rows.append({"slide": slide, "reader": reader, "width": width, "height": height, **result,
                         "loadavg_before": load_before,
                         "loadavg_after": os.getloadavg()})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("tifffile", "imagecodecs", "tiffslide", "tiatoolbox", "openslide-python", "openslide-bin", "zarr"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("HISTOSGE_DATA", "../shared/data")))
    ap.add_argument("--readers", default=",".join(READERS))
    ap.add_argument("--patches", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = measure(args.data, [r for r in args.readers.split(",") if r], args.patches, args.seed)
    record = {"what": __doc__.splitlines()[0], "argv": sys.argv[1:], "patch_px": SIDE, "patches": args.patches,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "versions": versions(),
              "seconds": time.perf_counter() - t0, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
