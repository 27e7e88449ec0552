"""End-to-end encoder throughput on one GPU: JPEG decode + crop + resize + UNI forward.

One prepared script for a lent H100 (no network there): UNI's architecture (ViT-L/16) with random
weights, fed by ``histosge.encode.extract`` itself (DataLoader workers crop uint8 patches from a
synthetic ~10k x 10k H&E-like JPEG, the GPU resizes/normalises them, bf16 autocast), for batch
sizes 64..512. It also times the model alone on a ready GPU batch, to show where the time goes.
Target on an H100: >= 1500 patches/s end to end.

    python bench/gpu_encoder_throughput.py --out $OUT/encoders_gpu_h100.json
    python bench/gpu_encoder_throughput.py --device cpu --n 64 --out /tmp/smoke.json   # smoke test

Needs torch, timm, numpy, pillow and tqdm; ``src/`` is put on the path when histosge is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import histosge  # noqa: F401
except ImportError:  # running from a bare checkout
    sys.path.insert(0, str(ROOT / "src"))


def synthetic_he_jpeg(path: Path, side: int, seed: int = 0) -> None:
    """An H&E-like JPEG: pink stroma, purple 'nuclei' blobs, white gaps (compresses like a slide)."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    small = side // 8
    base = np.empty((small, small, 3), np.uint8)
    base[:] = (232, 180, 205)
    noise = rng.normal(0, 18, (small, small, 1))
    base = np.clip(base + noise, 0, 255).astype(np.uint8)
    holes = rng.random((small, small)) < 0.02
    base[holes] = (245, 245, 245)
    img = Image.fromarray(base).resize((side, side), Image.Resampling.BILINEAR)
    arr = np.asarray(img).copy()
    n_nuclei = side * side // 900
    ys, xs = rng.integers(4, side - 4, n_nuclei), rng.integers(4, side - 4, n_nuclei)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            if dy * dy + dx * dx <= 9:
                arr[ys + dy, xs + dx] = (110, 60, 150)
    Image.fromarray(arr).filter(ImageFilter.SMOOTH).save(path, quality=90)


def model_only(enc, batch: int, iters: int, device) -> float:
    import torch

    from histosge.encode.extract import autocast

    x = torch.randn(batch, 3, enc.input_size, enc.input_size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(enc):
        enc(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            enc(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    import torch

    from histosge import encode

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--encoder", default="uni")
    ap.add_argument("--n", type=int, default=8192, help="patches per measured run")
    ap.add_argument("--batch-sizes", default=None, help="default 64,128,256,512 (cuda) or 32 (cpu)")
    ap.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: extract's choice)"
    )
    ap.add_argument("--image-side", type=int, default=10000)
    ap.add_argument("--patch-side", type=int, default=272, help="patch side in image px (her2st: 272)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here; use --device cpu for a smoke test")
    sizes = [
        int(b) for b in (args.batch_sizes or ("64,128,256,512" if device.type == "cuda" else "32")).split(",")
    ]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    from histosge.read.image import ImageSource

    tmp = Path(tempfile.mkdtemp(prefix="histosge-gpu-"))
    jpeg = tmp / "slide.jpg"
    t0 = time.perf_counter()
    synthetic_he_jpeg(jpeg, args.image_side)
    make_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ImageSource(jpeg).read_region(0, 0, 1, 1)  # one full decode, timed (each worker repeats it)
    decode_s = time.perf_counter() - t0

    enc = encode.create(args.encoder, weights="random", device=str(device))
    rng = np.random.default_rng(0)
    margin = args.patch_side
    centers = rng.uniform(margin, args.image_side - margin, (args.n, 2))
    # spot diameter such that patch_scale 2 gives --patch-side pixels at scale 1
    diameter = args.patch_side / 2.0

    runs = []
    for batch in sizes:
        source = ImageSource(jpeg)  # fresh: the decode is part of the measured time
        # warm-up (CUDA context, cuDNN autotune, allocator) on a few patches
        warm = min(batch, 64 if device.type == "cuda" else 4)
        encode.extract(
            source,
            centers[:warm],
            1.0,
            diameter,
            encoder=enc,
            batch_size=batch,
            cache_dir=False,
            num_workers=0,
            progress=False,
        )
        source = ImageSource(jpeg)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        feats = encode.extract(
            source,
            centers,
            1.0,
            diameter,
            encoder=enc,
            batch_size=batch,
            cache_dir=False,
            num_workers=args.workers,
            progress=False,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        row = {
            "batch": batch,
            "patches": int(len(feats)),
            "seconds": secs,
            "end_to_end_patches_per_s": len(feats) / secs,
            "model_only_patches_per_s": model_only(
                enc,
                min(batch, 8) if device.type == "cpu" else batch,
                1 if device.type == "cpu" else 20,
                device,
            ),
            "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            "finite": bool(np.isfinite(feats).all()),
        }
        runs.append(row)
        print(json.dumps(row), flush=True)

    best = max(r["end_to_end_patches_per_s"] for r in runs)
    result = {
        "script": "bench/gpu_encoder_throughput.py",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "device_type": device.type,
        "torch": torch.__version__,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "encoder": args.encoder,
        "weights": "random (speed only)",
        "precision": str(enc.precision) if device.type == "cuda" else "float32",
        "image_side_px": args.image_side,
        "jpeg_mb": jpeg.stat().st_size / 2**20,
        "make_jpeg_s": make_s,
        "full_jpeg_decode_s": decode_s,
        "patch_side_px": args.patch_side,
        "input_size": enc.input_size,
        "workers": args.workers
        if args.workers is not None
        else encode.extract.__globals__["default_num_workers"](device),
        "runs": runs,
        "best_end_to_end_patches_per_s": best,
        "target_patches_per_s": 1500,
        "meets_target": bool(best >= 1500) if device.type == "cuda" else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    jpeg.unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return result


if __name__ == "__main__":
    main()
