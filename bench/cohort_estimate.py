"""What 10,000 slides cost on N GPU nodes with a foundation-model encoder: an estimate, and from what.

Measured (inputs): the per-slide costs of ``bench/cohort_throughput.py`` on this 2-core CPU
(reading + tissue + lattice, encoding with he-stats, the model and the write), and the floating-
point operations of one patch through the encoder (``--encoder``, default UNI's ViT-L/16, counted
here with torch's FlopCounterMode on random weights). Not measured (assumptions, all flags): the
GPU's end-to-end rate in patches/s (default 1500: the target bench/gpu_encoder_throughput.py sets
for UNI on an H100; that script has never run on a GPU), the node (GPUs, CPU cores) and the GPU's
peak bf16 rate (default 989 TFLOP/s, the H100 SXM datasheet's dense figure), used only to say what
utilisation the assumed rate implies.

    python bench/cohort_estimate.py --throughput bench/results/cohort_throughput.json \
        --out bench/results/cohort_estimate.json

Model of a run: each slide needs S / R GPU-seconds for its S spots at R patches/s, and CPU work
measured here (core-seconds = 2 x the local run's seconds per slide on this 2-core machine, both
cores busy). A node finishes slides at the slower of its GPUs (G x R / S per second) and its
CPUs (C / core-seconds per slide). Patch decoding for a foundation model is taken to cost what
he-stats' whole encoding step costs here (decode + crop + resize + its features): an upper bound.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def encoder_gflops(name: str) -> tuple[float, int]:
    """GFLOPs of one patch through ``name`` (random weights, batch 1, the encoder's input size)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from histosge import encode

    enc = encode.create(name, weights="random", device="cpu")
    x = torch.rand(1, 3, enc.input_size, enc.input_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        enc(x)
    return counter.get_total_flops() / 1e9, int(enc.input_size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--throughput", default=str(ROOT / "bench/results/cohort_throughput.json"))
    ap.add_argument("--encoder", default="uni")
    ap.add_argument("--slides", type=int, default=10_000)
    ap.add_argument("--gpu-patches-per-s", type=float, default=1500.0,
                    help="assumed end-to-end encoder rate of one GPU (not measured)")
    ap.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (datasheet)")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--cpus-per-node", type=int, default=64)
    ap.add_argument("--spots", default="838,3350,10000",
                    help="spots per slide to estimate for (default: the measured slide at 100 um pitch, the same "
                         "at 50 um, and a large resection)")
    ap.add_argument("--nodes", default="1,2,4,8")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    meas = json.loads(Path(args.throughput).read_text())
    loc = meas["summary"]["local"]
    warm = meas["summary"]["local_features_cached"]
    spots_measured = loc["spots_per_slide_mean"]
    # CPU core-seconds per slide on this machine, split into a fixed part and a part per spot
    read_s = warm["read_s_per_slide_mean"]
    model_write_s = warm["predict_s_per_slide_mean"]
    decode_s = meas["derived"]["encoding_s_per_slide"]
    per_spot_core_s = 2 * (model_write_s + decode_s) / spots_measured
    fixed_core_s = 2 * read_s
    gflops, size = encoder_gflops(args.encoder)
    r = args.gpu_patches_per_s
    bound = args.gpu_peak_tflops * 1e3 / gflops
    rows = []
    for s in (int(v) for v in args.spots.split(",")):
        core_s = fixed_core_s + per_spot_core_s * s
        gpu_s = s / r
        node_rate_gpu = args.gpus_per_node / gpu_s  # slides/s per node
        node_rate_cpu = args.cpus_per_node / core_s
        node_rate = min(node_rate_gpu, node_rate_cpu)
        for n in (int(v) for v in args.nodes.split(",")):
            rows.append({
                "spots_per_slide": s, "nodes": n, "gpus": n * args.gpus_per_node,
                "bound_by": "GPU" if node_rate_gpu <= node_rate_cpu else "CPU",
                "hours": round(args.slides / (n * node_rate) / 3600, 2),
                "gpu_hours": round(args.slides * gpu_s / 3600, 1),
                "cpu_core_hours": round(args.slides * core_s / 3600, 1),
            })
    result = {
        "command": "python bench/cohort_estimate.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "estimate": True,
        "measured_here": {
            "from": args.throughput, "spots_per_slide": spots_measured,
            "read_tissue_lattice_s_per_slide": read_s, "model_and_write_s_per_slide": model_write_s,
            "he_stats_encoding_s_per_slide": decode_s,
            "cpu_core_s_fixed_per_slide": round(fixed_core_s, 2),
            "cpu_core_s_per_1000_spots": round(per_spot_core_s * 1000, 2),
            f"{args.encoder}_gflops_per_patch": round(gflops, 1), "encoder_input_px": size,
        },
        "assumed": {
            "gpu_patches_per_s": r, "source": "target of bench/gpu_encoder_throughput.py (UNI, H100), never measured",
            "gpu_peak_tflops_bf16": args.gpu_peak_tflops, "gpus_per_node": args.gpus_per_node,
            "cpus_per_node": args.cpus_per_node,
            "flop_bound_patches_per_s": round(bound), "implied_utilisation": round(r / bound, 3),
        },
        "slides": args.slides,
        "rows": rows,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
