"""What ``--all-genes`` (the whole transcriptome) costs against the default 1000 HVGs.

    python bench/all_genes_cost.py --data ../shared/data --out bench/results/all_genes_cost.json

Runs each command in a fresh process under ``/usr/bin/time -v`` (wall time and peak memory of
the process, as the operating system counts them), with a feature cache warmed by a first run
so that both settings pay the same for the images, and records the output's size on disk:

- ``histosge superres dlpfc:151673`` (Visium, 3,639 spots -> 14,201 with the generated ones);
- ``histosge train her2st:C2 her2st:C3 --mode image`` (legacy ST, two sections; output: the model file).

Take the numbers on a quiet machine (one job at a time): the script prints the load average it
saw before each run and records it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "superres dlpfc:151673": ["superres", "dlpfc:151673", "-o", "{out}/out.h5ad"],
    "train her2st:C2 her2st:C3 --mode image": ["train", "her2st:C2", "her2st:C3", "--mode", "image", "-o",
                                               "{out}/model.histosge"],
}
SETTINGS = {"1000 HVGs (default)": [], "--all-genes": ["--all-genes"]}


def _timed(args: list[str], env: dict) -> dict:
    """Wall seconds, peak resident memory and exit status of one fresh process."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "histosge.cli", *args, "--quiet"]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    genes = re.search(r"(\d+): (?:all detected|\d+ HVGs)", " ".join(res.stdout.split()))
    return {"seconds": round(wall, 1), "peak_memory_gb": round(int(peak[1]) / 1e6, 2) if peak else None,
            "genes": int(genes[1]) if genes else None, "load_average_before": round(load, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="histosge-allgenes-") as tmp:
        env = {**os.environ, "HISTOSGE_DATA": str(Path(args.data).resolve()), "HISTOSGE_CACHE": f"{tmp}/cache"}
        for name, template in COMMANDS.items():
            warm = [a.format(out=tmp) for a in template]
            _timed(warm, env)  # fills the feature cache: both settings then read the same features
            for setting, extra in SETTINGS.items():
                cmd = [a.format(out=tmp) for a in template] + extra
                row = {"command": f"histosge {name}", "setting": setting, **_timed(cmd, env)}
                produced = Path(cmd[cmd.index("-o") + 1])
                row["output_mb"] = round(produced.stat().st_size / 1e6, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"cpu_count": os.cpu_count(), "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
