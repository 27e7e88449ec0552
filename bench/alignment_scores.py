"""Alignment check on the shipped sections and on wrong images made from them.

Why: the readers refuse an image that does not fit the spot positions (``histosge.read.alignment``).
This measures that the check refuses none of the shipped sections, and that it refuses flipped,
rotated, shifted, rescaled and foreign-image variants of them, with the scores of each.

Every row goes through the real reader: the shipped sections as they are; each variant as a
copy of the section in a temporary folder whose image (or scale factor) was changed. her2st
variants use a 2000 px copy of the H&E with the pixel positions scaled to it (the reader scores
a 2000 px thumbnail anyway; the "2000 px copy" row shows the copy itself passes). Each variant
is read twice: with the check (refused or not, and the message) and with
``check_alignment=False`` (the scores).

    python bench/alignment_scores.py --data ../shared/data --out bench/results/alignment_scores.json

writes the JSON and the table in docs/BAD_INPUTS.md (section ``alignment-scores``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from histosge.errors import InputError
from histosge.geometry import spot_pitch
from histosge.markdown import replace_section
from histosge.read import read_her2st, read_legacy_st, read_section, read_spaceranger
from histosge.read.alignment import MARGIN, MIN_EDGE_AUC, background_colour
from histosge.read.image import ImageSource
from histosge.read.pixels import load_rgb

DLPFC = ("151673", "151676")
HER2ST = ("B4", "C2", "C3", "C4")
FOREIGN = {"151673": "151676", "151676": "151673", "B4": "C2", "C2": "C3", "C3": "C4", "C4": "B4"}
DOC = Path(__file__).resolve().parents[1] / "docs" / "BAD_INPUTS.md"


# -- image variants -------------------------------------------------------------------------------
def _fill(img: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in background_colour(img))


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The image content moved by (dx, dy) px, the uncovered part filled with the background colour."""
    h, w = img.shape[:2]
    out = np.empty_like(img)
    out[:] = _fill(img)
    dx, dy = int(round(dx)), int(round(dy))
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[max(-dy, 0):h + min(-dy, 0),
                                                                      max(-dx, 0):w + min(-dx, 0)]
    return out


def rotated(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotated anticlockwise about the image centre, same size, corners filled with background."""
    return np.asarray(Image.fromarray(img).rotate(degrees, resample=Image.Resampling.BILINEAR,
                                                  fillcolor=_fill(img)))


def variants(img: np.ndarray, pitch: float, foreign: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """name -> (image, factor applied to the scale factor / pixel positions)."""
    h, w = img.shape[:2]
    out = {
        "flipped left-right": (img[:, ::-1], 1.0),
        "flipped upside down": (img[::-1], 1.0),
        "rotated 180 degrees": (img[::-1, ::-1], 1.0),
        "rotated 90 degrees": (np.rot90(img), 1.0),
        "rotated 10 degrees": (rotated(img, 10), 1.0),
        "rotated 5 degrees": (rotated(img, 5), 1.0),
        "shifted 3 pitches (x and y)": (shifted(img, 3 * pitch, 3 * pitch), 1.0),
        "shifted 1 pitch (x)": (shifted(img, pitch, 0), 1.0),
        "shifted 0.5 pitch (x and y)": (shifted(img, pitch / 2, pitch / 2), 1.0),
        "scale factor x0.8": (img, 0.8),
        "scale factor x0.9": (img, 0.9),
        "scale factor x1.1": (img, 1.1),
        "scale factor x1.25": (img, 1.25),
        "foreign image (section {f})": (np.asarray(Image.fromarray(foreign).resize((w, h))), 1.0),
    }
    if h == w:
        out["x and y swapped (transposed image)"] = (np.ascontiguousarray(img.transpose(1, 0, 2)), 1.0)
    return {k: (np.ascontiguousarray(v), s) for k, (v, s) in out.items()}


# -- reading --------------------------------------------------------------------------------------
def _row(section: str, variant: str, read) -> dict:
    """Read with the check (refused?) and without it (scores)."""
    row = {"section": section, "variant": variant}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read(True)
            row["refused"], row["message"] = False, ""
        except InputError as err:
            row["refused"], row["message"] = True, err.message
        try:
            meta = read(False).uns["histosge"]["alignment"]
        except InputError as err:  # refused by a check the override does not lift (off the image)
            meta = {"status": f"not scored: {err.what}"}
    row["seconds"] = round(time.perf_counter() - t0, 2)
    for key in ("auc", "edge_auc", "best_alternative", "best_alternative_edge_auc", "count_rho", "n_on", "n_off",
                "n_edge", "status", "off_tissue_spots"):
        if key in meta:
            v = meta[key]
            row[key] = round(v, 4) if isinstance(v, float) else v
    return row


def dlpfc_rows(data: Path, tmp: Path) -> list[dict]:
    rows = []
    for sec in DLPFC:
        folder = data / "dlpfc" / sec
        rows.append(_row(f"dlpfc {sec}", "as shipped",
                         lambda check, f=folder, s=sec: read_spaceranger(f, library_id=s, check_alignment=check)))
        spatial = folder / "spatial"
        sf = json.loads((spatial / "scalefactors_json.json").read_text())
        img = load_rgb(spatial / "tissue_lowres_image.png")
        positions = pd.read_csv(spatial / "tissue_positions_list.csv", header=None)
        pitch = spot_pitch(positions[[5, 4]].to_numpy(float)) * sf["tissue_lowres_scalef"]
        foreign = load_rgb(data / "dlpfc" / FOREIGN[sec] / "spatial" / "tissue_lowres_image.png")
        for name, (var, scale) in variants(img, pitch, foreign).items():
            copy = tmp / f"{sec}-{len(rows)}"
            (copy / "spatial").mkdir(parents=True)
            for f in folder.iterdir():
                if f.is_file():
                    (copy / f.name).symlink_to(f)
            (copy / "spatial" / "tissue_positions_list.csv").symlink_to(spatial / "tissue_positions_list.csv")
            Image.fromarray(var).save(copy / "spatial" / "tissue_lowres_image.png")
            (copy / "spatial" / "scalefactors_json.json").write_text(
                json.dumps({**sf, "tissue_lowres_scalef": sf["tissue_lowres_scalef"] * scale}))
            rows.append(_row(f"dlpfc {sec}", name.format(f=FOREIGN[sec]),
                             lambda check, c=copy, s=sec: read_spaceranger(c, library_id=s, check_alignment=check)))
    return rows


def her2st_rows(data: Path, tmp: Path) -> list[dict]:
    root = data / "her2st"
    thumbs: dict[str, tuple[np.ndarray, float]] = {}
    for sec in HER2ST:
        jpg = next(p for p in (root / "ST-imgs" / sec[0] / sec).iterdir() if p.suffix.lower() == ".jpg")
        src = ImageSource(jpg)
        thumbs[sec] = src.thumbnail(2000)
        src.close()
    rows = []
    for sec in HER2ST:
        rows.append(_row(f"her2st {sec}", "as shipped",
                         lambda check, s=sec: read_her2st(root, s, check_alignment=check)))
        img, k = thumbs[sec]
        sel = pd.read_csv(root / "ST-spotfiles" / f"{sec}_selection.tsv", sep="\t")
        counts = root / "ST-cnts" / f"{sec}.tsv.gz"
        pitch = spot_pitch(sel[["pixel_x", "pixel_y"]].to_numpy()) * k
        cases = {"2000 px copy (control)": (img, 1.0), **variants(img, pitch, thumbs[FOREIGN[sec]][0])}
        for name, (var, scale) in cases.items():
            copy = tmp / f"{sec}-{len(rows)}"
            copy.mkdir()
            moved = sel.assign(pixel_x=sel["pixel_x"] * k * scale, pixel_y=sel["pixel_y"] * k * scale)
            moved.to_csv(copy / "selection.tsv", sep="\t", index=False)
            Image.fromarray(var).save(copy / "he.png")
            rows.append(_row(f"her2st {sec}", name.format(f=FOREIGN[sec]),
                             lambda check, c=copy, s=sec, n=counts: read_legacy_st(
                                 n, c / "selection.tsv", c / "he.png", library_id=s, check_alignment=check)))
    return rows


def crop_rows(data: Path) -> list[dict]:
    if not (data / "visium_mouse_brain_crop").is_dir():
        return []
    return [_row("visium_mouse_brain_crop", "as shipped",
                 lambda check: read_section(data / "visium_mouse_brain_crop", check_alignment=check))]


# -- report ---------------------------------------------------------------------------------------
def _f(v, digits=3) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _why(r: dict) -> str:
    status = r.get("status", "")
    if status.startswith("overridden: "):
        status = status[len("overridden: "):]
    if status.startswith("misaligned"):
        edge, alt = r.get("edge_auc"), r.get("best_alternative_edge_auc")
        parts = [f"edge AUC < {MIN_EDGE_AUC:g}"] if edge is not None and edge < MIN_EDGE_AUC else []
        if edge is not None and alt is not None and alt >= edge + MARGIN:
            parts.append(f"an alternative fits {alt - edge:+.2f} better")
        return "; ".join(parts)
    if r["refused"]:
        return r["message"].split(": ", 1)[-1].split(" -> ")[0]
    return status


def table(rows: list[dict], command: str) -> str:
    shipped = [r for r in rows if r["variant"] in ("as shipped", "2000 px copy (control)")]
    wrong = [r for r in rows if r not in shipped]
    n_false = sum(r["refused"] for r in shipped)
    n_missed = sum(not r["refused"] for r in wrong)
    lines = [
        "## Alignment check: shipped sections and wrong images",
        "",
        f"Made by `{command}` on {date.today().isoformat()} "
        "(`bench/results/alignment_scores.json`). Each row is a real read of the section, or of a copy of it "
        "whose image (or scale factor) was changed; `refused` is what the reader did, the scores come from "
        "the same read with `check_alignment=False`.",
        "",
        "- **auc**: tissue-ness (colour distance from the slide background, averaged over the spot) of in-tissue "
        "against off-tissue spots (Space Ranger: the positions file's `in_tissue = 0` spots; legacy ST: the "
        "lattice positions the selection file leaves out).",
        f"- **edge AUC**: the same for spots within 2.5 pitches of the tissue edge. Refused when it is below "
        f"{MIN_EDGE_AUC:g}, or when a transform of the positions (flips, rotations, swapped x/y, shifts of half "
        f"and whole pitches, scale factors 0.75-1.33) raises it by {MARGIN:g} or more (**best alternative**).",
        "- **count rho**: Spearman correlation of total counts with haematoxylin density across in-tissue "
        "spots; recorded, not used to refuse (it is negative on the aligned DLPFC 151676).",
        "",
        f"Shipped sections refused: **{n_false} of {len(shipped)}**. Wrong images not refused: "
        f"**{n_missed} of {len(wrong)}**"
        + (" (" + "; ".join(f"{r['section']} {r['variant']}" for r in wrong if not r["refused"]) + ")"
           if n_missed else "") + ".",
        "",
        "| section | image | refused | auc | edge AUC | best alternative (edge AUC) | count rho | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        alt = (f"{r['best_alternative']} ({_f(r.get('best_alternative_edge_auc'))})"
               if r.get("best_alternative") else "-")
        lines.append(f"| {r['section']} | {r['variant']} | {'yes' if r['refused'] else 'no'} | {_f(r.get('auc'))} | "
                     f"{_f(r.get('edge_auc'))} | {alt} | {_f(r.get('count_rho'), 2)} | {_why(r)} |")
    example = next((r["message"] for r in wrong if r["refused"] and "does not fit" in r["message"]), None)
    if example:
        example = re.sub(r"/tmp/histosge-align-[^/]+", "<tmp>", example)
        lines += ["", "The message, e.g.:", "", "```", example, "```"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the shared data folder (dlpfc/, her2st/)")
    p.add_argument("--out", type=Path, default=Path("bench/results/alignment_scores.json"))
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/BAD_INPUTS.md")
    args = p.parse_args(argv)
    args.data = args.data.resolve()  # the variants link to its files from a temporary folder
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="histosge-align-") as tmp:
        tmp = Path(tmp)
        rows = dlpfc_rows(args.data, tmp) + her2st_rows(args.data, tmp) + crop_rows(args.data)
        shutil.rmtree(tmp, ignore_errors=True)
    command = "python bench/alignment_scores.py --data <data> --out " + str(args.out)
    result = {"date": date.today().isoformat(), "min_edge_auc": MIN_EDGE_AUC, "margin": MARGIN,
              "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.no_doc:
        replace_section(DOC, "alignment-scores", table(rows, command))
    bad = [r for r in rows if r["variant"] in ("as shipped", "2000 px copy (control)") and r["refused"]]
    for r in rows:
        print(f"{r['section']:24s} {r['variant']:36s} refused={r['refused']!s:5s} auc={_f(r.get('auc'))} "
              f"edge={_f(r.get('edge_auc'))} {r.get('status', '')[:60]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
