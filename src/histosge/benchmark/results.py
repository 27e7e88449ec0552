"""The benchmark's records as files: append one per fit, load them as a table, merge runs, aggregate seeds.

A run writes ``results.jsonl``, one JSON record per line, appended as each fit finishes (an
interrupted run keeps every record it wrote). Runs before it wrote ``results.json``, one JSON
list; ``load`` reads either. Tables are pandas: merging is a concat that keeps the first record of
each ``KEY``, and mean ± sd over seeds is a group-by.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_path
from ..datasets import section_name
from .predictions import FOLDER

#: The file a run appends to, and the one runs wrote before it (a JSON list).
RESULTS = "results.jsonl"
LEGACY_RESULTS = "results.json"
#: What one record measures: a method on one split of one section (R+ and G+: for one cohort).
KEY = ("dataset", "section", "protocol", "seed", "method", "prior_from")


def _default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def path_of(folder: str | os.PathLike) -> Path:
    """The results file of a benchmark folder: ``results.jsonl``, else a legacy ``results.json``."""
    folder = Path(folder)
    new = folder / RESULTS
    return new if new.exists() or not (folder / LEGACY_RESULTS).exists() else folder / LEGACY_RESULTS


def append(folder: str | os.PathLike, record: dict) -> None:
    """Add one record to ``folder/results.jsonl`` (one line, flushed: a kill loses at most that line)."""
    with open(Path(folder) / RESULTS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=_default) + "\n")
        fh.flush()


def write(folder: str | os.PathLike, records: Sequence[dict]) -> Path:
    """Replace ``folder/results.jsonl`` with ``records`` (atomically)."""
    path = Path(folder) / RESULTS
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, default=_default) + "\n" for r in records))
    return path


def load_records(path: str | os.PathLike) -> list[dict]:
    """The records of a benchmark folder or results file, as written (dicts, file order).

    A last line cut short by a kill is left out."""
    path = Path(path)
    if path.is_dir():
        path = path_of(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    records = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the line a killed run was writing
                break
            raise
    return records


def frame(records: Sequence[dict]) -> pd.DataFrame:
    """Records as a table: one row per record, a column per field (NaN where a record lacks it)."""
    df = pd.DataFrame(list(records))
    for key in KEY:
        if key not in df:
            df[key] = None
    return df


def load(path: str | os.PathLike) -> pd.DataFrame:
    """``frame`` of ``load_records``: the table of a benchmark folder or results file."""
    return frame(load_records(path))


def merge(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Runs made separately as one table; a record measured twice (same ``KEY``): the first wins.
    The index is each kept row's position in the concatenation."""
    df = pd.concat(list(frames), ignore_index=True)
    key = df[list(KEY)].map(lambda v: "" if v is None or v != v else str(v))  # no cohort: None or NaN
    return df[~key.duplicated(keep="first")]


def records(df: pd.DataFrame) -> list[dict]:
    """The table back as records: a field a record did not have (NaN) is left out, as in the file."""

    def missing(v) -> bool:
        return v is None or (isinstance(v, float) and np.isnan(v))

    return [{k: v for k, v in row.items() if not missing(v)} for row in df.to_dict("records")]


def aggregate(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by`` (groups in order of first appearance): mean, sd (ddof 1) and count of the
    finite values of each metric, as columns ``(metric, 'mean' | 'std' | 'count')``."""
    values = df.reindex(columns=list(metrics)).apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
    values[list(by)] = df[list(by)]
    return values.groupby(list(by), sort=False, dropna=False)[list(metrics)].agg(["mean", "std", "count"])


def method_order(methods) -> list[str]:
    """``methods`` once each, in the suite's order (tables' rows, figures' columns); unknown ones last."""
    from .methods import ALL_METHODS

    return sorted(set(methods), key=lambda m: (ALL_METHODS.index(m) if m in ALL_METHODS else 99, m))


def combine(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> list[Path]:
    """Benchmark folders made separately (other sections or protocols, other machines) as one folder
    ``out``: the records ``merge``d, run.json listing the parts, their predictions and PNGs copied.
    Render its report with ``report.render(out)``. Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw, frames, metas, copied = [], [], [], set()
    for part in map(Path, parts):
        recs = load_records(part)
        raw += recs
        frames.append(frame(recs))
        meta_path = part / "run.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if "seconds_total" not in meta:  # interrupted before its end: what its records say
            meta = {**meta, "interrupted": True, "seconds_total": float("nan"), "seconds_features": float("nan"),
                    "sections": sorted({section_name(r["dataset"], r["section"]) for r in recs}),
                    "protocols": sorted({r["protocol"] for r in recs}),
                    "seeds": sorted({r["seed"] for r in recs}),
                    "encoder": recs[0]["encoder"] if recs else meta.get("encoder")}
        metas += meta["parts"] if "parts" in meta else [{**meta, "out": str(part)}]  # a merge of merges
        if out.resolve() != part.resolve():
            for src in [*part.glob("*.png"), *(part / FOLDER).glob("*.npz")]:
                dest = out / src.relative_to(part)
                if dest in copied:  # a task in two parts: the first part's, as for its records
                    continue
                copied.add(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
    merged = [raw[i] for i in merge(frames).index]  # the records as written (no NaN for a missing field)
    meta = {
        "encoder": metas[0].get("encoder"),
        "seeds": sorted({s for m in metas for s in m.get("seeds", [])}),
        "seconds_total": float(np.nansum([m["seconds_total"] for m in metas])),
        "seconds_features": float(np.nansum([m["seconds_features"] for m in metas])),
        "parts": metas,
        **({"predictions": FOLDER} if any(m.get("predictions") for m in metas) else {}),
    }
    written = [write(out, merged)]
    if (out / LEGACY_RESULTS).exists() and all(out.resolve() != Path(p).resolve() for p in parts):
        (out / LEGACY_RESULTS).unlink()  # a stale list would not be read, but would mislead
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    return [*written, out / "run.json"]
