"""Measure the image encoders and choose histosge's default one.

Two measurements, written to bench/results/:

(a) speed: patches/s (preprocess + forward, uint8 in, features out) and peak memory (max RSS of a
    fresh process) of every registered encoder on this CPU. Encoders whose weights are not here
    run with random weights: speed does not depend on the values.
(b) an honest linear probe of the encoders that run offline: features -> standardise -> PCA (up
    to 256) -> RidgeCV, predicting log1p(normalize_total 1e4) expression of the top-1000 seurat_v3
    HVGs of the *training* spots; the score is the mean per-gene Pearson r on held-out spots only.
    Tasks: her2st cross-section (leave one of C2/C3/C4 out; and B4, another patient, from
    C2+C3+C4) and DLPFC recovery (random half of the spots held out, seed 0, 151673 and 151676).

The encoder with the best mean probe score over all tasks becomes DEFAULT_ENCODER; the table goes
to encoders_choice.md/.json. Usage:

    .venv/bin/python bench/bench_encoders.py --data ../shared/data            # both parts
    .venv/bin/python bench/bench_encoders.py --data ../shared/data --skip-speed
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PATCH_SCALE = 2.0
SEED = 0

# name -> (patches timed, batch size); the giant ViTs take seconds per patch on 2 cores
SPEED_PLAN = {
    "he-stats": (128, 32),
    "efficientnet-lite0": (128, 32),
    "resnet50": (32, 16),
    "phikon": (16, 8),
    "uni": (8, 4),
    "phikon-v2": (8, 4),
    "virchow2": (4, 2),
    "uni2-h": (4, 2),
    "h-optimus-0": (2, 2),
    "gigapath": (2, 2),
}
# encoders scored by the probe (offline ones) plus a control: the same CNN with random weights
PROBE_ENCODERS = [
    "he-stats",
    "efficientnet-lite0",
    "efficientnet-lite0@random",
    "he-stats+efficientnet-lite0",
]
HER2ST_TASKS = [
    ("her2st: C4 from C2+C3", ["C2", "C3"], "C4"),
    ("her2st: C3 from C2+C4", ["C2", "C4"], "C3"),
    ("her2st: C2 from C3+C4", ["C3", "C4"], "C2"),
    ("her2st: B4 from C2+C3+C4 (other patient)", ["C2", "C3", "C4"], "B4"),
]
DLPFC_TASKS = ["151673", "151676"]


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


# -- (a) speed --------------------------------------------------------------------------------
def speed_one(name: str, n: int, batch: int, side: int) -> dict:
    """Runs in its own process so max RSS is this encoder's alone."""
    import torch

    from histosge import encode

    spec = encode.get_spec(name)
    ok, _ = encode.availability(spec)
    weights = None if ok else "random"
    t0 = time.perf_counter()
    enc = encode.create(name, weights=weights, device="cpu")
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    with torch.inference_mode():
        enc(enc.preprocess(patches[:1]))  # warm-up
        done, t0 = 0, time.perf_counter()
        while done < n:
            out = enc(enc.preprocess(torch.from_numpy(patches)))
            done += len(out)
        secs = time.perf_counter() - t0
    return {
        "encoder": name,
        "weights": "real" if weights is None else "random (speed only)",
        "dim": int(out.shape[1]),
        "patches": done,
        "batch": batch,
        "patch_side_px": side,
        "patches_per_s": done / secs,
        "build_s": build_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params_m": sum(p.numel() for p in enc.parameters()) / 1e6,
    }


def run_speed(names: list[str], side: int) -> list[dict]:
    rows = []
    for name in names:
        n, batch = SPEED_PLAN.get(name, (16, 8))
        cmd = [
            sys.executable,
            __file__,
            "--speed-one",
            name,
            "--n",
            str(n),
            "--batch",
            str(batch),
            "--side",
            str(side),
        ]
        print(f"[speed] {name} ...", flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if res.returncode != 0:
            rows.append(
                {"encoder": name, "error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
            )
        else:
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print("   ", rows[-1], flush=True)
    return rows


# -- (b) probe --------------------------------------------------------------------------------
def section_features(
    section: str, data_dir: Path, encoder_name: str, cache_dir: Path
) -> tuple[object, np.ndarray, dict]:
    """Features of one section; ``a+b`` concatenates two encoders, ``name@random`` is untrained."""
    from histosge import encode
    from histosge.read import image_for, read_section

    if "+" in encoder_name:
        parts = [section_features(section, data_dir, e, cache_dir) for e in encoder_name.split("+")]
        info = {
            "seconds": sum(p[2]["seconds"] for p in parts),
            "n": parts[0][2]["n"],
            "patch_side_px": parts[0][2]["patch_side_px"],
        }
        return parts[0][0], np.concatenate([p[1] for p in parts], axis=1), info

    adata = read_section(section, data_dir=data_dir)
    source, scale = image_for(adata)
    lib = adata.uns["histosge"]["library_id"]
    diameter = float(adata.uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"])
    name, _, weights = encoder_name.partition("@")
    enc = encode.create(name, weights=weights or None, device="cpu")
    t0 = time.perf_counter()
    feats = encode.extract(
        source,
        adata.obsm["spatial"],
        scale,
        diameter,
        encoder=enc,
        patch_scale=PATCH_SCALE,
        batch_size=32,
        cache_dir=cache_dir,
        progress=False,
    )
    info = {
        "seconds": time.perf_counter() - t0,
        "n": len(feats),
        "patch_side_px": int(round(PATCH_SCALE * diameter * scale)),
    }
    return adata, feats, info


def ridge_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    xt, xs = scaler.transform(x_train), scaler.transform(x_test)
    k = int(min(256, xt.shape[0] - 1, xt.shape[1]))
    pca = PCA(n_components=k, random_state=SEED).fit(xt)
    xt, xs = pca.transform(xt), pca.transform(xs)
    ridge = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(xt, y_train)
    return ridge.predict(xs), float(ridge.alpha_)


def probe_task(train_x, train_ad, test_x, test_ad) -> dict:
    import anndata as ad

    from histosge.evaluate import score
    from histosge.genes import log_normalize, select_hvgs

    genes, flavour = select_hvgs(train_ad, 1000)
    y_train = log_normalize(train_ad, genes)
    y_test = log_normalize(test_ad, genes)
    pred, alpha = ridge_probe(train_x, y_train, test_x)
    s = score(y_test, pred)
    assert isinstance(train_ad, ad.AnnData)
    return {
        "pcc": s["pcc"],
        "pcc_top50": s["pcc_top50"],
        "mse": s["mse"],
        "n_train": int(train_ad.n_obs),
        "n_test": int(test_ad.n_obs),
        "n_genes": len(genes),
        "hvg_flavour": flavour,
        "alpha": alpha,
    }


def run_probe(data_dir: Path, encoders: list[str], cache_dir: Path) -> dict:
    import anndata as ad

    results: dict[str, dict] = {}
    extraction: dict[str, dict] = {}
    her2st = {s: None for task in HER2ST_TASKS for s in task[1] + [task[2]]}
    for enc_name in encoders:
        print(f"[probe] {enc_name}", flush=True)
        res = results.setdefault(enc_name, {})
        feats = {}
        for s in her2st:
            adata, x, info = section_features(f"her2st:{s}", data_dir, enc_name, cache_dir)
            feats[s] = (adata, x)
            extraction[f"{enc_name} her2st:{s}"] = info
        shared = sorted(set.intersection(*(set(feats[s][0].var_names) for s in feats)))
        for title, train, test in HER2ST_TASKS:
            tr = ad.concat([feats[s][0][:, shared] for s in train], join="inner", index_unique="-")
            tr.uns["histosge"] = feats[train[0]][0].uns["histosge"]
            te = feats[test][0][:, shared]
            xtr = np.concatenate([feats[s][1] for s in train])
            res[title] = probe_task(xtr, tr, feats[test][1], te)
            print(f"    {title}: pcc {res[title]['pcc']:.4f}", flush=True)
        if "@" in enc_name:  # the random-weight control: her2st only (DLPFC adds CPU time, no insight)
            continue
        for sid in DLPFC_TASKS:
            adata, x, info = section_features(f"dlpfc:{sid}", data_dir, enc_name, cache_dir)
            extraction[f"{enc_name} dlpfc:{sid}"] = info
            rng = np.random.default_rng(SEED)
            test_mask = np.zeros(adata.n_obs, bool)
            test_mask[rng.permutation(adata.n_obs)[: adata.n_obs // 2]] = True
            title = f"DLPFC {sid}: random half held out"
            res[title] = probe_task(x[~test_mask], adata[~test_mask], x[test_mask], adata[test_mask])
            print(f"    {title}: pcc {res[title]['pcc']:.4f}", flush=True)
    return {"results": results, "extraction": extraction}


# -- report -----------------------------------------------------------------------------------
def choose(probe: dict) -> tuple[str, dict[str, float]]:
    means = {
        name: float(np.mean([r["pcc"] for r in tasks.values()])) for name, tasks in probe["results"].items()
    }
    # the table's columns come from the first encoder: put one scored on every task first
    probe["results"] = dict(sorted(probe["results"].items(), key=lambda kv: -len(kv[1])))
    # controls and concatenations are not registered encoders: they cannot be chosen
    eligible = {k: v for k, v in means.items() if "@" not in k and "+" not in k}
    return max(eligible, key=eligible.get), means


def _load(meta: dict) -> str:
    return ", ".join(f"{v:.1f}" for v in meta["load_average_at_start"])


def write_report(meta: dict, speed: list[dict] | None, probe: dict | None, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Image encoder choice",
        "",
        f"Measured {meta['date']} on {meta['cpu']} ({meta['cores']} cores, torch {meta['torch']}, "
        f"{meta['torch_threads']} threads; load average at start {_load(meta)}"
        " — other jobs shared this machine, so speeds are lower bounds). "
        "Produced by `bench/bench_encoders.py`.",
        "",
    ]
    payload: dict = {"machine": meta}
    if probe is not None:
        default, means = choose(probe)
        payload.update({"default": default, "mean_pcc": means, "probe": probe})
        tasks = list(next(iter(probe["results"].values())))
        lines += [
            "## Linear probe: mean per-gene Pearson r on held-out spots",
            "",
            "Features -> standardise -> PCA (<= 256) -> RidgeCV, predicting log1p(normalize_total 1e4)",
            "of the top-1000 seurat_v3 HVGs of the training spots; patches are 2 spot diameters wide.",
            "Higher is better.",
            "`efficientnet-lite0@random` is a control: the same network with untrained weights (her2st",
            "only; its mean is over those tasks). `a+b` concatenates two encoders' features.",
            "",
            "| encoder | " + " | ".join(tasks) + " | mean |",
            "|---|" + "---|" * (len(tasks) + 1),
        ]
        for name, res in sorted(probe["results"].items(), key=lambda kv: -means[kv[0]]):
            cells = " | ".join(f"{res[t]['pcc']:.3f}" if t in res else "—" for t in tasks)
            mark = " **(default)**" if name == default else ""
            lines.append(f"| {name}{mark} | {cells} | {means[name]:.3f} |")
        first = next(iter(probe["results"].values()))
        lines += [
            "",
            "Spots (train / test) and genes: "
            + "; ".join(
                f"{t}: {r['n_train']}/{r['n_test']}, {r['n_genes']} ({r['hvg_flavour']})"
                for t, r in first.items()
            ),
            "",
            f"**DEFAULT_ENCODER = `{default}`** (best mean over the tasks among encoders that run offline).",
            "",
        ]
    if speed is not None:
        payload["speed"] = speed
        lines += [
            "## Speed on this CPU (preprocess + forward, batch of uint8 patches in)",
            "",
            "| encoder | weights | dim | params (M) | patches/s | peak RSS (MB) |",
            "|---|---|---|---|---|---|",
        ]
        for r in speed:
            if "error" in r:
                lines.append(f"| {r['encoder']} | error: {r['error']} | | | | |")
                continue
            lines.append(
                f"| {r['encoder']} | {r['weights']} | {r['dim']} | {r['params_m']:.1f} | "
                f"{r['patches_per_s']:.2f} | {r['peak_rss_mb']:.0f} |"
            )
        lines += [
            "",
            f"Patches of {speed[0].get('patch_side_px', '?')} px (her2st spot at patch_scale 2) are "
            "resized to each encoder's input size inside `preprocess`.",
            "",
        ]
    (out / "encoders_choice.md").write_text("\n".join(lines))
    (out / "encoders_choice.json").write_text(json.dumps(payload, indent=1, default=float))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=Path(os.environ.get("HISTOSGE_DATA", ROOT.parent / "shared" / "data"))
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: histosge's)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-probe", action="store_true")
    ap.add_argument("--speed-encoders", default=",".join(SPEED_PLAN))
    ap.add_argument("--probe-encoders", default=",".join(PROBE_ENCODERS))
    ap.add_argument("--side", type=int, default=272, help="patch side (px) for the speed test")
    ap.add_argument("--speed-one", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.speed_one:
        print(json.dumps(speed_one(args.speed_one, args.n, args.batch, args.side)))
        return
    from histosge.encode.cache import default_cache_dir

    meta = machine()
    old = (
        json.loads((args.out / "encoders_choice.json").read_text())
        if (args.out / "encoders_choice.json").exists()
        else {}
    )
    if args.skip_speed and args.skip_probe and "machine" in old:  # only re-render the report
        meta = old["machine"]
    speed = old.get("speed") if args.skip_speed else run_speed(args.speed_encoders.split(","), args.side)
    probe = (
        old.get("probe")
        if args.skip_probe
        else run_probe(args.data, args.probe_encoders.split(","), args.cache_dir or default_cache_dir())
    )
    if speed is not None:
        (args.out / "encoders_speed.json").parent.mkdir(parents=True, exist_ok=True)
        (args.out / "encoders_speed.json").write_text(json.dumps({"machine": meta, "speed": speed}, indent=1))
    write_report(meta, speed, probe, args.out)


if __name__ == "__main__":
    main()
