"""Light commands, old against new: wall time and peak memory of commands that compute nothing.

Why: `histosge encoders` took 17 s and 727 MB, `histosge methods` 23 s and a misspelt option was
answered after a long wait (issue 26): listing, --help and every error found before work should
import nothing heavy (torch, timm, scanpy) and stay under 300 MB. Each command runs ``--repeats``
times in a fresh interpreter (as the ``histosge`` script does), alternating old and new so that a
machine's load drifts over both; the table gives the median wall time, the peak resident memory
(VmHWM) and whether torch/timm/scanpy were imported.

    python bench/light_commands.py --old-commit 392632d --out bench/results/light_commands.json

``--old-commit`` is any commit of this repository (its src/ is unpacked with git archive into a temporary
folder); the new code is this checkout's src/. Run it on a quiet machine: the numbers are wall times.
``--section DIR`` adds an unknown --markers gene on that section (it reads the section, which is work;
e.g. ``$HISTOSGE_DATA/dlpfc/151673``). Writes the records as JSON and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "scanpy")

HARNESS = textwrap.dedent("""
    import json, sys
    sys.argv = ["histosge", *json.loads(sys.argv[1])]
    from histosge.cli import main
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    peak = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")) / 1024
    sys.stdout.flush()
    print("@@" + json.dumps({"code": code, "heavy": [m for m in __HEAVY__ if m in sys.modules], "peak_mb": peak}))
""").replace("__HEAVY__", repr(HEAVY))


def cases(tmp: Path, section: str | None) -> dict[str, list[str]]:
    out = str(tmp / "out.h5ad")
    found = {
        "encoders": ["encoders"],
        "methods": ["methods"],
        "--help": ["--help"],
        "superres --help": ["superres", "--help"],
        "path that does not exist": ["superres", str(tmp / "no" / "151673"), "-o", out],
        "bad option (--genes 0)": ["superres", str(tmp / "no"), "-o", out, "--genes", "0"],
        "unknown encoder": ["superres", str(tmp / "no"), "-o", out, "--encoder", "unii"],
        "unknown method": ["recover", str(tmp / "no"), "-o", out, "--method", "ridgee"],
    }
    if section:
        found["unknown --markers gene"] = ["superres", section, "-o", out, "--plot", "--markers", "NOTAGENE"]
    return found


def old_src(commit: str, into: Path) -> Path:
    """src/ of ``commit``, unpacked with git archive."""
    tar = into / "old.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(tar), commit, "src"], check=True)
    with tarfile.open(tar) as t:
        t.extractall(into / "old", filter="data")
    return into / "old" / "src"


def run_once(src: Path, args: list[str], cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "120"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", HARNESS, json.dumps(args)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    line = [x for x in res.stdout.splitlines() if x.startswith("@@")]
    if not line:
        raise RuntimeError(f"{args}: no result\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return {**json.loads(line[-1][2:]), "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-commit", required=True, help="the commit to compare against (e.g. 392632d)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--section", default=None, help="a section folder for the unknown --markers gene case")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "light_commands.json")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        srcs = {"old": old_src(a.old_commit, tmp), "new": ROOT / "src"}
        records = []
        for name, args in cases(tmp, a.section).items():
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for _ in range(a.repeats):
                for which in ("old", "new"):  # alternated: load drifts over both alike
                    runs[which].append(run_once(srcs[which], args, tmp))
            rec = {"command": name, "args": args}
            for which, rs in runs.items():
                rec[which] = {"wall_s_median": statistics.median(r["wall_s"] for r in rs),
                              "wall_s": [round(r["wall_s"], 3) for r in rs],
                              "peak_mb": max(r["peak_mb"] for r in rs), "heavy": rs[0]["heavy"],
                              "exit": rs[0]["code"]}
            rec["ratio_wall"] = rec["old"]["wall_s_median"] / rec["new"]["wall_s_median"]
            records.append(rec)
            print(f"{name}: old {rec['old']['wall_s_median']:.2f} s {rec['old']['peak_mb']:.0f} MB, "
                  f"new {rec['new']['wall_s_median']:.2f} s {rec['new']['peak_mb']:.0f} MB "
                  f"({rec['ratio_wall']:.1f}x)", flush=True)

    meta = {"old_commit": a.old_commit, "repeats": a.repeats, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "command": "python bench/light_commands.py " + " ".join(sys.argv[1:])}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    lines = [f"Light commands, old ({a.old_commit}) against new: median of {a.repeats} runs each, fresh "
             f"interpreters. `{meta['command']}`", "",
             "| command | old s | old MB | old imports | new s | new MB | new imports | old/new time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        o, n = r["old"], r["new"]
        lines.append(f"| {r['command']} | {o['wall_s_median']:.2f} | {o['peak_mb']:.0f} | "
                     f"{', '.join(o['heavy']) or '-'} | {n['wall_s_median']:.2f} | {n['peak_mb']:.0f} | "
                     f"{', '.join(n['heavy']) or '-'} | {r['ratio_wall']:.1f}x |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out} and {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
