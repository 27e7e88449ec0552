"""Write a her2st section in STUtility's file layout: the worked example of docs/YOUR_DATA.md.

Why: users bring legacy-ST data as STUtility expects it (the mouse olfactory bulb set among
them): a count matrix with genes as rows and ``XxY`` spot columns, the ST spot detector's table
of spot positions (x, y, new_x, new_y, pixel_x, pixel_y, selected) and the H&E JPEG. There is no
internet here, so this converts a shipped her2st section into that layout; ``--checkerboard``
keeps only the spots with x + y even, the lattice of the mouse olfactory bulb arrays.

    python bench/stutility_layout.py --data ../shared/data --section C2 --out /tmp/c2_stutility
    python bench/stutility_layout.py --data ../shared/data --section C2 --checkerboard --out /tmp/c2_mob

The folder then holds ``counts.tsv.gz``, ``alignment_table.tsv`` and ``he.jpg`` (a link to the
section's JPEG), which ``histosge superres /tmp/c2_mob -o c2_mob.h5ad`` reads as it is.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import pandas as pd


def convert(data: Path, section: str, out: Path, *, checkerboard: bool = False) -> dict:
    root = data / "her2st"
    out.mkdir(parents=True, exist_ok=True)
    counts = pd.read_csv(root / "ST-cnts" / f"{section}.tsv.gz", sep="\t", index_col=0)
    spots = pd.read_csv(root / "ST-spotfiles" / f"{section}_selection.tsv", sep="\t")
    if checkerboard:
        spots = spots[(spots["x"] + spots["y"]) % 2 == 0]
        keep = [i for i in counts.index if sum(map(int, i.split("x"))) % 2 == 0]
        counts = counts.loc[keep]
    # the spot detector's column set, in another order than her2st's, tab-separated
    spots[["x", "y", "pixel_x", "pixel_y", "new_x", "new_y", "selected"]].to_csv(
        out / "alignment_table.tsv", sep="\t", index=False)
    with gzip.open(out / "counts.tsv.gz", "wt") as fh:
        counts.T.to_csv(fh, sep="\t")  # genes as rows, spots as columns
    jpg = next(p for p in (root / "ST-imgs" / section[0] / section).iterdir() if p.suffix.lower() == ".jpg")
    link = out / "he.jpg"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(jpg.resolve())
    return {"spots": int(len(counts)), "genes": int(counts.shape[1]), "selected": int(spots["selected"].sum()),
            "parity": sorted(set(((spots["x"] + spots["y"]) % 2).astype(int)))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the shared data folder (with her2st/)")
    p.add_argument("--section", default="C2", help="her2st section (B4, C2, C3, C4)")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--checkerboard", action="store_true", help="keep only spots with x + y even")
    args = p.parse_args(argv)
    info = convert(args.data, args.section, args.out, checkerboard=args.checkerboard)
    print(f"{args.out}: {info['spots']} spots x {info['genes']} genes (counts.tsv.gz, genes as rows), "
          f"{info['selected']} selected in alignment_table.tsv, he.jpg; x + y parity {info['parity']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
