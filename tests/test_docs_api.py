"""docs/API.md is generated from the code (docs/make_api.py) and must never drift from it.

Why: the hand-written signatures of docs/ARCHITECTURE.md drifted; a page regenerated here and
compared byte for byte cannot. The public functions' numpydoc sections are checked against
their real signatures, so a renamed or added parameter fails until its docstring says what it is.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make_api():
    spec = importlib.util.spec_from_file_location("make_api", ROOT / "docs" / "make_api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


make_api = _make_api()
DOCUMENTED = make_api.documented()


def test_api_page_is_up_to_date():
    committed = (ROOT / "docs" / "API.md").read_text()
    assert committed == make_api.render(), "docs/API.md is stale: run python docs/make_api.py and commit it"


@pytest.mark.parametrize("name,obj", DOCUMENTED, ids=[n for n, _ in DOCUMENTED])
def test_docstring_sections_match_signature(name, obj):
    doc = make_api.parse(inspect.getdoc(obj))
    assert doc.summary, f"{name}: no docstring"
    assert doc.summary_lines == 1, f"{name}: the summary must be one line, then a blank line ({doc.summary!r})"
    if dataclasses.is_dataclass(obj):  # a result object: its fields are its Attributes
        fields = [f.name for f in dataclasses.fields(obj)]
        listed = [n for e in doc.entries("Attributes") for n in e.names]
        assert listed == fields, f"{name}: Attributes {listed} != fields {fields}"
        return
    expected = make_api.signature_names(obj)
    listed = [n for e in doc.entries("Parameters") for n in e.names]
    assert listed == expected, f"{name}: Parameters {listed} != signature {expected}"
    if inspect.isclass(obj):
        return
    returns = inspect.signature(obj).return_annotation
    if returns not in (None, "None"):
        assert doc.entries("Returns"), f"{name}: no Returns section"


def test_every_export_of_histosge_is_documented():
    import histosge

    names = {n for n, _ in DOCUMENTED}
    functions = [n for n in histosge.__all__ if not n.startswith("_") and not n.endswith("Error")]
    missing = [n for n in functions if f"histosge.{n}" not in names]
    assert not missing, f"exported from histosge but not on docs/API.md: {missing} (add them to make_api.PAGES)"


def test_parser_reads_numpydoc_entries():
    doc = make_api.parse("Do a thing.\n\nWhy it matters.\n\nParameters\n----------\na, b : int\n    Two.\n"
                         "**kw\n    More.\n\nReturns\n-------\ndict\n    Keys:\n\n    - ``x``: one.\n")
    assert doc.summary == "Do a thing."
    assert [n for e in doc.entries("Parameters") for n in e.names] == ["a", "b", "**kw"]
    assert doc.entries("Returns")[0].name == "dict"
    assert "- `x`" in make_api._entries(doc.entries("Returns")) or "  - `x`" in make_api._entries(
        doc.entries("Returns"))


def _written(adata) -> set[str]:
    """The keys a reader chose to write: obs/var columns, obsm/layers/uns keys, uns['histosge'] fields."""
    keys = set(adata.obs.columns) | set(adata.var.columns) | set(adata.obsm) | set(adata.layers) | set(adata.uns)
    return keys | set(adata.uns.get("histosge", {}))


def _missing_from_returns(func, adata) -> list[str]:
    """Keys ``func`` wrote that neither its Returns nor, when it refers to it, the section-AnnData
    contract (``histosge.read.read_section``'s Returns: written once for every reader) lists."""
    text = "\n".join(make_api.parse(inspect.getdoc(func)).sections["Returns"])
    if "every reader returns" in text:
        from histosge.read import read_section

        text += "\n".join(make_api.parse(inspect.getdoc(read_section)).sections["Returns"])
    return sorted(k for k in _written(adata) if f"``{k}``" not in text and f"['{k}']" not in text)


def test_readers_returns_list_every_key_written(make_spaceranger, make_legacy_st, tmp_path):
    """Run each reader on a small section and find every key it wrote in its Returns section."""
    from PIL import Image

    from histosge.read import read_her2st, read_legacy_st, read_spaceranger
    from histosge.read.slide import read_slide

    section = read_spaceranger(make_spaceranger())
    assert _missing_from_returns(read_spaceranger, section) == []
    legacy = read_her2st(make_legacy_st("A1"), "A1")
    assert _missing_from_returns(read_legacy_st, legacy) == []

    img = Image.new("RGB", (1200, 900), (245, 245, 245))
    img.paste((180, 90, 150), (200, 150, 1000, 750))  # a block of "tissue" on glass
    img.save(tmp_path / "slide.png")
    slide = read_slide(tmp_path / "slide.png", pitch_um=100.0, spot_diameter_um=55.0, mpp=1.0)
    assert _missing_from_returns(read_slide, slide) == []


def _layout() -> set[str]:
    """The paths the layout block of docs/ARCHITECTURE.md names, relative to src/histosge."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("```\nsrc/histosge/\n", 1)[1].split("```", 1)[0]
    named: set[str] = set()
    folder = ""
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        token = line.split()[0] if line.strip() else ""
        if not (token.endswith(".py") or token.endswith("/")):
            continue  # a continuation line of a description
        if indent == 2:
            folder = token if token.endswith("/") else ""
            named.add(token.rstrip("/"))
        elif indent == 4 and folder:
            named.add(folder + token)
    return named


def test_architecture_layout_matches_the_tree():
    """Every module of src/histosge has a line in docs/ARCHITECTURE.md, and every line a module."""
    pkg = ROOT / "src" / "histosge"
    tree = {str(p.relative_to(pkg)) for p in pkg.rglob("*.py") if p.name != "__init__.py" or p.parent == pkg}
    tree |= {str(p.relative_to(pkg)) for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    named = _layout()
    assert not named - tree, f"docs/ARCHITECTURE.md names what is gone: {sorted(named - tree)}"
    assert not tree - named, f"add a line to docs/ARCHITECTURE.md's layout for: {sorted(tree - named)}"
