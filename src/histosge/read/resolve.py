"""One door for every way a user names a section: a folder, a file, or ``dataset:section``.

``read_section("dlpfc:151673")`` and ``read_section("/runs/outs")`` both end in the matching
reader, so the CLI and the benchmarks never need to know which layout a section has.
Dataset names are resolved inside ``data_dir`` (default: the ``HISTOSGE_DATA`` variable),
laid out as in the shared data folder: ``dlpfc/<id>/``, ``her2st/ST-*``, and folders holding
one ``.h5ad`` (plus its image) such as ``visium_mouse_brain_crop/``. A folder in STUtility's
legacy-ST layout (a count table, a spot table and the H&E image, docs/YOUR_DATA.md) is read
with ``read_legacy_st``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad

from .. import datasets
from ..errors import InputError, broken_link
from .formats import IMAGE_SUFFIXES
from .h5ad import read_h5ad
from .legacy_st import her2st_sections, read_legacy_st
from .spaceranger import COUNTS_FILE, read_spaceranger

_NAME = re.compile(r"^(?P<dataset>[A-Za-z0-9_]+)[:/](?P<section>[A-Za-z0-9_.-]+)$")


def known_sections(data_dir: str | os.PathLike) -> list[str]:
    """Every name ``read_section`` accepts inside ``data_dir``: ``dataset:section`` names of the
    registered datasets (``histosge.datasets``), then folders holding one ``.h5ad``."""
    root = Path(data_dir)
    names = datasets.known_sections(root)
    if root.is_dir():
        names += [p.name for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob("*.h5ad"))]
    return names


def _single_image(folder: Path) -> Path | None:
    found = sorted(p for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))
    return found[0] if len(found) == 1 else None


_TABLE = (".tsv", ".tsv.gz", ".csv", ".csv.gz", ".txt", ".txt.gz")


def _named(folder: Path, words: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_TABLE)
                  and (not words or any(w in p.name.lower() for w in words)))


_SPOT_WORDS = ("spot", "selection", "alignment")
_AFFIXES = ("alignment_table", "alignment", "selection", "spot_data", "spots", "spot", "counts", "count", "cnt",
            "stdata", "he")


def _stem(name: str) -> str:
    """The section a file belongs to, by name: ``alignment_table_MOB1.tsv``, ``MOB1.tsv`` and
    ``MOB1.jpg`` (STUtility), ``C2_selection.tsv`` and ``C2.tsv.gz`` (her2st) give ``mob1``, ``c2``."""
    n = name.lower()
    for suffix in sorted((*_TABLE, *IMAGE_SUFFIXES), key=len, reverse=True):
        if n.endswith(suffix):
            n = n[: -len(suffix)]
            break
    parts = [p for p in re.split(r"[_\-. ]+", n) if p]
    while parts and parts[0] in _AFFIXES or (len(parts) > 1 and parts[0] == "table"):
        parts = parts[1:]
    while parts and parts[-1] in _AFFIXES:
        parts = parts[:-1]
    return "_".join(parts)


def legacy_sections(folder: str | os.PathLike) -> dict[str, tuple[Path, Path, Path | None]]:
    """The legacy-ST sections of a folder, by name: (counts, spot table, image or None).

    A spot table is a table whose name holds 'spot', 'selection' or 'alignment'; its counts are
    the other table of the same section name (``alignment_table_MOB1.tsv`` and ``MOB1.tsv``, as
    STUtility names them), its image the image of that name (or the folder's only image).

    Parameters
    ----------
    folder : str or path
        A folder of count tables, spot tables and H&E images.

    Returns
    -------
    dict
        Section name -> (counts, spots, image); sections without a count table are left out.
    """
    folder = Path(folder)
    spots = _named(folder, _SPOT_WORDS)
    others = [p for p in _named(folder, ()) if p not in spots]
    images = sorted(p for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))
    found = {}
    for table in spots:
        stem = _stem(table.name)
        if not stem:  # 'spots.tsv': names no section, so it pairs with nothing by name
            continue
        counts = [p for p in others if _stem(p.name) == stem]
        if len(counts) != 1:
            continue
        img = [p for p in images if _stem(p.name) == stem]
        found[stem] = (counts[0], table, img[0] if len(img) == 1 else
                                     (images[0] if len(images) == 1 else None))
    return found


def _pick_one(folder: Path, names: list[str], example: tuple[Path, Path, Path | None]) -> str:
    c, s, i = example
    return (f"this folder holds {len(names)} sections ({', '.join(names)}): give one with --counts FILE --spots FILE "
            f"--image FILE, e.g. --counts {c} --spots {s} --image {i or '<its H&E image>'} (Python: "
            "histosge.read.read_legacy_st(counts, spots, image, library_id=...))")


def _legacy_files(folder: Path, image=None) -> tuple[Path, Path, Path] | None:
    """(counts, spot table, image) of a legacy-ST folder in STUtility's layout, or None.

    The folder holds one count table (name containing 'count' or 'cnt', or the section name of
    the spot table, as STUtility's ``MOB1.tsv`` beside ``alignment_table_MOB1.tsv``), one spot
    table (name containing 'spot', 'selection' or 'alignment') and one image, unless ``image``
    names it. A folder of several sections is an error that lists them and how to pick one.
    """
    counts = _named(folder, ("count", "cnt"))
    spots = [p for p in _named(folder, _SPOT_WORDS) if p not in counts]
    if not counts and not spots:
        return None
    where = str(folder)
    fix = ("a legacy-ST folder holds one count table (*count*.tsv[.gz], or <section>.tsv beside "
           "alignment_table_<section>.tsv), one spot table (*spot*/*selection*/*alignment*.tsv or .csv) "
           "and one H&E image")
    if len(counts) != 1 or len(spots) != 1:
        sections = legacy_sections(folder)
        if len(sections) > 1:
            names = sorted(sections)
            raise InputError(f"{len(sections)} legacy-ST sections in one folder", where=where,
                             fix=_pick_one(folder, names, sections[names[0]]))
        if len(sections) == 1:
            c, s, img = next(iter(sections.values()))
            img = Path(image) if image is not None else img
            if img is None:
                raise InputError("no single H&E image next to the count and spot tables", where=where, fix=fix)
            return c, s, img
    for what, found in (("count table", counts), ("spot table", spots)):
        if len(found) != 1:
            raise InputError(f"{len(found)} {what}s ({', '.join(p.name for p in found) or 'none'})",
                             where=where, fix=fix)
    img = Path(image) if image is not None else _single_image(folder)
    if img is None:
        raise InputError("no single H&E image next to the count and spot tables", where=where, fix=fix)
    return counts[0], spots[0], img


# -- formats: one (sniff, read) pair each, tried in order ------------------------------------------
@dataclass(frozen=True)
class Reader:
    """A section format: ``sniff(path)`` says whether ``path`` is one, ``read(path, image,
    check_alignment)`` reads it."""

    name: str
    sniff: Callable[[Path], bool]
    read: Callable[[Path, object, bool], ad.AnnData]


def _is_spaceranger(path: Path) -> bool:
    if path.is_file():
        return path.name == COUNTS_FILE
    return (path / COUNTS_FILE).exists() or (path / "outs" / COUNTS_FILE).exists()


def _her2st_root(path: Path, image, check: bool) -> ad.AnnData:
    names = her2st_sections(path)
    first = names[0] if names else "C2"
    raise InputError(f"this is a her2st folder holding {len(names)} sections ({', '.join(names) or 'none found'})",
                     where=str(path),
                     fix=f"give one section as her2st:{first} --data-dir {path.parent} (Python: "
                         f"read_section('her2st:{first}', data_dir=...)), or its files: --counts "
                         f"{path / 'ST-cnts' / (first + '.tsv.gz')} --spots "
                         f"{path / 'ST-spotfiles' / (first + '_selection.tsv')} --image "
                         f"{path / 'ST-imgs' / first[:1] / first}/<its image>")


def read_files(counts: str | os.PathLike, spots: str | os.PathLike, image: str | os.PathLike, *,
               library_id: str | None = None, check_alignment: bool = True) -> ad.AnnData:
    """A legacy-ST section given as its three files (the CLI's ``--counts --spots --image``).

    STUtility's layout (``MOB1.tsv``, ``alignment_table_MOB1.tsv`` with ``selected``,
    ``MOB1.jpg``) and her2st's (``ST-cnts/C2.tsv.gz``, ``ST-spotfiles/C2_selection.tsv``, the
    JPEG) alike; :func:`read_legacy_st` reads them.

    Parameters
    ----------
    counts, spots, image : str or path
        The count table, the spot detector's table and the full-resolution H&E.
    library_id : str, optional
        Default: the section name of the count table (``MOB1``, ``C2``).
    check_alignment : bool
        False reads an image that fails the alignment check with a warning.

    Returns
    -------
    AnnData
        The section as :func:`read_legacy_st` returns it.

    Raises
    ------
    InputError
        A file that does not exist, or any error of :func:`read_legacy_st`.
    """
    paths = [Path(p).expanduser() for p in (counts, spots, image)]
    for p in paths:
        if not p.exists():
            raise _missing_path(p)
    name = library_id or paths[0].name.split(".")[0]
    return read_legacy_st(*paths, library_id=name, check_alignment=check_alignment)


def _read_legacy_folder(path: Path, image, check: bool) -> ad.AnnData:
    counts, spots, img = _legacy_files(path, image)
    return read_legacy_st(counts, spots, img, library_id=path.name, check_alignment=check)


def _one_h5ad(path: Path) -> list[Path]:
    return sorted(path.glob("*.h5ad")) if path.is_dir() else []


#: Every section format ``read_section`` knows, tried in order (``register_reader`` adds one).
READERS: list[Reader] = [
    Reader("h5ad", lambda p: p.is_file() and p.suffix == ".h5ad",
           lambda p, image, check: read_h5ad(p, image=image, check_alignment=check)),
    Reader("spaceranger", _is_spaceranger,
           lambda p, image, check: read_spaceranger(p.parent if p.is_file() else p, image=image,
                                                    check_alignment=check)),
    Reader("her2st-root", lambda p: p.is_dir() and (p / "ST-cnts").is_dir(), _her2st_root),
    Reader("legacy-st-folder", lambda p: p.is_dir() and bool(_named(p, ("count", "cnt"))
                                                             or _named(p, ("spot", "selection", "alignment"))),
           _read_legacy_folder),
    Reader("h5ad-folder", lambda p: len(_one_h5ad(p)) == 1,
           lambda p, image, check: read_h5ad(_one_h5ad(p)[0], image=image if image is not None
                                             else _single_image(p), check_alignment=check)),
]


def register_reader(reader: Reader, *, first: bool = True) -> Reader:
    """Add a section format (tried before the built-in ones unless ``first=False``)."""
    READERS.insert(0, reader) if first else READERS.append(reader)
    return reader


#: Entry-point group an installed package registers section readers under (docs/EXTENDING.md).
ENTRY_POINT_GROUP = "histosge.readers"


def _load_plugins() -> None:
    """Import the installed plugins of ``histosge.readers``: a module registers its readers when
    imported; an entry point naming a :class:`Reader` is registered here (tried first)."""
    from .._plugins import load_entry_points

    for obj in load_entry_points(ENTRY_POINT_GROUP).values():
        if isinstance(obj, Reader) and obj not in READERS:
            register_reader(obj)


def _read_path(path: Path, image, check: bool = True) -> ad.AnnData:
    _load_plugins()
    for reader in READERS:
        if reader.sniff(path):
            return reader.read(path, image, check)
    if path.is_file():
        raise InputError(
            "not a section file (expected .h5ad or filtered_feature_bc_matrix.h5)",
            where=str(path),
            fix="give an .h5ad, a Space Ranger folder, or a dataset name like her2st:C2",
        )
    h5ads = _one_h5ad(path)
    raise InputError(
        f"no {COUNTS_FILE} and {'several' if h5ads else 'no'} .h5ad files in this folder",
        where=str(path),
        fix="give a Space Ranger output folder, one .h5ad file, or a dataset name like dlpfc:151673",
    )


def input_paths(
    source: str | os.PathLike,
    *,
    image: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """The files and folders ``read_section(source, image=...)`` would read, without reading them.

    Used to refuse an output path that would overwrite an input (``_atomic.check_output``).
    A name that cannot be resolved gives what can be named; ``read_section`` reports the error.
    """
    found: list[Path] = []
    path = Path(str(source)).expanduser()
    if path.exists():
        found.append(path)
        if path.is_file() and path.name == COUNTS_FILE:
            found.append(path.parent)
    else:
        root = data_dir if data_dir is not None else os.environ.get("HISTOSGE_DATA")
        if root:
            root = Path(root)
            m = _NAME.match(str(source))
            dataset = datasets.get_dataset(m["dataset"]) if m else None
            if dataset is not None:
                found += dataset.inputs(root, m["section"])
            elif (root / str(source)).is_dir():
                found.append(root / str(source))
    if image is not None:
        found.append(Path(image).expanduser())
    return [p for p in found if p.exists()]


def _looks_like_path(text: str) -> bool:
    """A source written as a path (absolute, ./ ~/ ../, several folders, or a file suffix), never
    as a ``dataset:section`` name."""
    path = Path(text)
    return (path.is_absolute() or text.startswith((".", "~")) or len(path.parts) > 2
            or (len(path.parts) == 2 and _NAME.match(text) is None)
            or text.lower().endswith((".h5ad", ".h5", ".zarr", ".tsv", ".tsv.gz", ".csv", *IMAGE_SUFFIXES)))


def _missing_path(path: Path) -> InputError:
    """'no such file or folder', with what the nearest existing folder holds that looks like it."""
    import difflib

    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    near = []
    if parent.is_dir():
        try:
            names = [p.name for p in parent.iterdir()]
        except OSError:
            names = []
        near = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    fix = (f"did you mean {' or '.join(str(parent / n) for n in near)}?" if near
           else f"check the path ({parent} exists)" if parent.exists() and parent != path.parent
           else "check the path")
    return InputError("no such file or folder", where=str(path), fix=fix)


def is_slide(source) -> bool:
    """A file that is an image (a slide), not a section (.h5ad, Space Ranger folder, dataset name)."""

    if isinstance(source, ad.AnnData):
        return False
    path = Path(str(source))
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def check_source(source: str | os.PathLike, *, data_dir: str | os.PathLike | None = None) -> None:
    """Fail at once, without reading anything, when ``source`` names nothing ``read_section`` can
    find: a path that does not exist says so; an unknown name lists the known ones.

    Parameters
    ----------
    source : str or path
        What ``read_section`` would be given.
    data_dir : str or path, optional
        The folder names are looked up in; default ``$HISTOSGE_DATA``.

    Raises
    ------
    InputError
        The same error ``read_section`` would raise for a source that is not there.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return
    if _looks_like_path(text):
        raise _missing_path(path)
    root = datasets.data_dir(data_dir, text)
    if _dataset_section(text, root) is None and not (not _NAME.match(text) and (root / text).is_dir()):
        raise _unknown(text, root)


def _dataset_section(source: str, root: Path) -> tuple[datasets.Dataset, str] | None:
    """(dataset, section) that ``dataset:section`` names in the data folder ``root``; None when it
    names none (a dataset whose reader names its own sections, ``Dataset.own_sections``, takes any)."""
    m = _NAME.match(source)
    dataset = datasets.get_dataset(m["dataset"]) if m else None
    if dataset is not None and (dataset.own_sections or m["section"] in dataset.find_sections(root)):
        return dataset, m["section"]
    return None


def _unknown(source: str, root: Path) -> InputError:
    known = known_sections(root)
    return InputError(
        f"no such file or folder, and no section {source!r} in the data folder",
        where=str(root),
        fix=f"give a path that exists, or one of: {', '.join(known)}"
        if known
        else "give a path that exists; this data folder has no known datasets",
    )


def read_section(
    source: str | os.PathLike,
    *,
    image: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    check_alignment: bool = True,
) -> ad.AnnData:
    """Read a section named by a path (Space Ranger folder, .h5ad) or ``dataset:section``.

    One door for every format, so the rest of the pipeline sees one AnnData layout
    (docs/ARCHITECTURE.md) whatever the lab's files look like.

    Parameters
    ----------
    source : str or path
        A Space Ranger folder, an ``.h5ad`` file, a dataset name (``her2st:C2``,
        ``dlpfc:151673``; ``dlpfc/151673`` also works; the datasets are ``histosge.datasets``),
        or the name of a folder in ``data_dir`` holding one .h5ad. An existing path always
        wins over a name; a path is read by the first of ``READERS`` that recognises it.
    image : str or path, optional
        The full-resolution H&E the positions were measured on (checked, referenced, not loaded).
    data_dir : str or path, optional
        The folder names are looked up in; default ``$HISTOSGE_DATA``.
    check_alignment : bool
        False reads an image that fails the alignment check (flipped, rotated, shifted,
        rescaled, another section's) with a warning instead of an error; the score is in
        ``uns['histosge']['alignment']`` either way (CLI: ``--no-alignment-check``).

    Returns
    -------
    AnnData
        What the format's reader returns (:func:`read_spaceranger`, :func:`read_legacy_st`,
        :func:`read_h5ad`); every reader writes at least:

        - ``X``: counts (raw unless ``uns['histosge']['raw_counts']`` is False: an .h5ad may
          hold normalised values), ``scipy.sparse.csr_matrix`` float32, spots x genes;
          ``var_names`` unique gene symbols.
        - ``obs['array_row']``, ``obs['array_col']``: whole-number grid positions (float64).
        - ``obsm['spatial']``: spot centres (x, y) in full-resolution pixels.
        - ``uns['spatial'][library_id]``: ``images`` (``hires``/``lowres``), ``scalefactors``
          (``spot_diameter_fullres``, ``tissue_hires_scalef``/``tissue_lowres_scalef``) and
          ``metadata`` (``source_image_path``), as ``scanpy.pl.spatial`` reads them.
        - ``uns['histosge']``: ``grid``, ``library_id``, ``source``, ``raw_counts``,
          ``spot_diameter_um``, ``alignment`` (the alignment check's record: ``status`` and scores,
          ``histosge.read.alignment``).

    Raises
    ------
    InputError
        An unknown name or unreadable path, inconsistent files, or an image that does not fit
        the spot positions.
    """
    source = str(source)
    path = Path(source).expanduser()
    if path.exists():
        return _read_path(path, image, check_alignment)
    link = broken_link(path)
    if link:
        raise InputError(link, where=str(path), fix="point the link at the section, or give the section's path")
    if _looks_like_path(source):
        raise _missing_path(path)
    root = datasets.data_dir(data_dir, source)
    named = _dataset_section(source, root)
    if named is not None:
        dataset, section = named
        adata = dataset.read(root, section, image=image, check_alignment=check_alignment)
        adata.uns.setdefault("histosge", {})["dataset"] = dataset.name  # its tissue's markers, for plots
        return adata
    if not _NAME.match(source) and (root / source).is_dir():
        return _read_path(root / source, image, check_alignment)
    raise _unknown(source, root)
