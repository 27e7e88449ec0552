"""The slides of a cohort run, from what the user typed: files, folders, or .txt/.csv lists.

``resolve_slides(["a.svs", "more/", "list.csv"])`` returns one :class:`Slide` per slide file,
each with the name its output takes (``<name>.h5ad``), or one ``InputError`` naming every
problem of one kind at once: nothing given, files that do not exist, files that are not slide
images, folders without slides, and two slides whose outputs would have the same name.

- A folder stands for the slide files directly inside it (sorted by name; hidden files and
  sub-folders are skipped, so an MRXS file's companion folder is not read as a slide).
- A ``.txt`` list has one path per line (blank lines and ``#`` comments skipped). A ``.csv``
  list has a header with a ``path`` column (else its first column is the path) and an optional
  ``name`` column that names the output. Relative paths are relative to the list's folder.
- A slide's name is its file name without the slide suffix (``C4.ome.tif`` -> ``C4``).
  Names are compared without case: ``A.svs`` and ``a.tif`` would overwrite each other's output
  on a case-insensitive file system, so they are refused too.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, broken_link
from ..read.formats import IMAGE_SUFFIXES, strip_suffix

#: Files a cohort reads as slides (tifffile, OpenSlide, or plain images given with --mpp): the one table.
SLIDE_SUFFIXES = IMAGE_SUFFIXES
LIST_SUFFIXES = (".txt", ".csv")
_NAME_OK = re.compile(r"^[^/\\\x00]+$")
_SHOWN = 4  # problems named in one error line before "and N more"


@dataclass(frozen=True)
class Slide:
    """One slide of the cohort: ``name`` (its output is ``<name>.h5ad``) and its absolute ``path``."""

    name: str
    path: Path


def is_slide_file(path: Path) -> bool:
    return path.name.lower().endswith(SLIDE_SUFFIXES)


def slide_name(path: Path) -> str:
    """``C4.ome.tif`` -> ``C4``: the file name without its slide suffix."""
    return strip_suffix(path.name) or path.stem


def _some(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _folder(path: Path) -> list[Path]:
    try:
        entries = sorted(path.iterdir())
    except OSError as err:
        raise InputError(f"cannot list the folder ({err.strerror or err})", where=str(path),
                         fix="check its permissions") from None
    found = [p for p in entries if not p.name.startswith(".") and p.is_file() and is_slide_file(p)]
    if not found:
        raise InputError("the folder holds no slide image", where=str(path),
                         fix=f"give slide files ({', '.join(SLIDE_SUFFIXES[:6])}, ...) or a folder of them")
    return found


def _read_list(path: Path) -> list[tuple[str, str | None]]:
    """(path text, name or None) per entry of a .txt or .csv list."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the slide list ({getattr(err, 'strerror', None) or err})", where=str(path),
                         fix="give a UTF-8 text file with one slide path per line") from None
    if path.suffix.lower() == ".txt":
        lines = (line.strip() for line in text.splitlines())
        return [(line, None) for line in lines if line and not line.startswith("#")]
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    if "path" in header:
        ip, iname = header.index("path"), header.index("name") if "name" in header else None
        body = rows[1:]
    else:
        ip, iname, body = 0, None, rows
    out = []
    for r in body:
        if len(r) <= ip or not r[ip].strip() or r[ip].strip().startswith("#"):
            continue
        name = r[iname].strip() if iname is not None and len(r) > iname and r[iname].strip() else None
        out.append((r[ip].strip(), name))
    return out


def resolve_slides(items, *, where: str = "SLIDES") -> list[Slide]:
    """Every slide named by ``items`` (paths as str or Path): see the module docstring."""
    items = [items] if isinstance(items, (str, os.PathLike)) else list(items or [])
    if not items:
        raise InputError("no slides given", where=where,
                         fix="give slide files, folders of slides, or a .txt/.csv list of them")
    entries: list[tuple[Path, str | None, str]] = []  # (path, name, where it was named)
    missing: list[str] = []
    not_slides: list[str] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            entries += [(p, None, str(path)) for p in _folder(path)]
        elif path.is_file() and path.name.lower().endswith(LIST_SUFFIXES):
            listed = _read_list(path)
            if not listed:
                raise InputError("the slide list is empty", where=str(path), fix="put one slide path per line in it")
            for text, name in listed:
                p = Path(text).expanduser()
                p = p if p.is_absolute() else path.parent / p
                if p.is_dir():
                    entries += [(q, None, str(path)) for q in _folder(p)]
                else:
                    entries.append((p, name, str(path)))
        else:
            entries.append((path, None, where))
    for p, _, src in entries:
        link = broken_link(p)
        if link:
            raise InputError(link, where=str(p), fix=f"point the link at a slide, or drop it from {src}")
        if not p.exists():
            missing.append(str(p))
        elif not p.is_file():
            not_slides.append(f"{p} (not a file)")
        elif not is_slide_file(p):
            not_slides.append(str(p))
    if missing:
        origin = sorted({src for p, _, src in entries if str(p) in missing})
        raise InputError(f"{len(missing)} slide{'s' if len(missing) > 1 else ''} not found: {_some(missing)}",
                         where=", ".join(origin), fix="check the paths (a list's relative paths start at its folder)")
    if not_slides:
        raise InputError(f"not a slide image: {_some(not_slides)}", where=where,
                         fix=f"give slide files ({', '.join(SLIDE_SUFFIXES[:6])}, ...); predict a section with "
                             "histosge predict MODEL SECTION -o out.h5ad")
    slides: list[Slide] = []
    seen_paths: set[Path] = set()
    for p, name, _src in entries:
        real = p.resolve()
        if real in seen_paths:  # the same file named twice: one slide
            continue
        seen_paths.add(real)
        name = name or slide_name(p)
        if not _NAME_OK.match(name) or name in (".", "..") or name.lower() == "manifest":
            raise InputError(f"{name!r} cannot name an output file", where=str(p),
                             fix="give it another name in a .csv list (columns path,name)")
        slides.append(Slide(name=name, path=real))
    by_name: dict[str, list[Slide]] = {}
    for s in slides:
        by_name.setdefault(s.name.lower(), []).append(s)
    clashes = [group for group in by_name.values() if len(group) > 1]
    if clashes:
        group = clashes[0]
        more = f" ({len(clashes) - 1} more names clash)" if len(clashes) > 1 else ""
        raise InputError(f"{len(group)} slides would write the same output {group[0].name}.h5ad: "
                         f"{_some([str(s.path) for s in group])}{more}", where=where,
                         fix="rename one, or list them in a .csv with a name column (path,name)")
    return slides
