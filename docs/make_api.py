"""Write docs/API.md from the public functions' own docstrings and signatures.

    python docs/make_api.py            # rewrite docs/API.md
    python docs/make_api.py --check    # exit 1 (and say so) when docs/API.md is stale

Why generated: hand-written signatures drift (docs/ARCHITECTURE.md's had); a page made from the
code cannot, and ``tests/test_docs_api.py`` fails when the committed page differs from what this
script writes or when a public function's Parameters stop matching its signature.

Standard library only: ``inspect`` for the real signatures and a small parser for the numpydoc
sections our docstrings use (Parameters, Returns, Raises, Attributes, Notes, Examples, See Also).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "API.md"

#: What the page documents, in pipeline order: (module, names). ``Class.method`` documents a method;
#: a class documents its constructor (Parameters of the class docstring against ``__init__``).
PAGES: list[tuple[str, list[str]]] = [
    ("histosge", ["read_section", "read_slide", "superres", "recover", "predict", "HisToSGE",
                  "HisToSGE.paper", "HisToSGE.get_params", "SectionModel", "SectionModel.fit",
                  "SectionModel.fit_spots", "SectionModel.predict", "SectionModel.predict_spots",
                  "SectionModel.save", "SectionModel.load", "SectionModel.describe", "SectionModel.get_params",
                  "SectionModel.provenance", "SectionModel.state", "SectionModel.build_encoder"]),
    ("histosge.tasks", ["train"]),
    ("histosge.options", ["ModelOptions"]),
    ("histosge.methods", ["list_methods", "get_spec", "create_method", "create_model", "load_model",
                          "register_method", "MethodSpec", "Method"]),
    ("histosge.benchmark.protocols", ["Protocol", "get_protocol", "protocols"]),
    ("histosge.read", ["read_section", "read_spaceranger", "read_legacy_st", "read_her2st", "read_h5ad",
                       "image_for"]),
    ("histosge.read.slide", ["read_slide"]),
    ("histosge.encode", ["create", "list_encoders", "availability", "register_encoder", "get_spec",
                         "known_names", "default_device", "extract"]),
    ("histosge.cohort", ["predict_cohort", "CohortResult"]),
    ("histosge.evaluate", ["score", "pearson_per_gene", "domains_ari"]),
    ("histosge.genes", ["GeneChoice", "choose_genes", "parse_gene_names", "check_named"]),
    ("histosge.model.reliability", ["estimate", "Reliability", "gene_table"]),
    ("histosge.plot", ["gene_maps", "default_genes", "dot_size"]),
]

#: Sections whose body is a list of ``name : type`` entries with indented descriptions.
ENTRY_SECTIONS = ("Parameters", "Returns", "Yields", "Raises", "Attributes")
SECTIONS = (*ENTRY_SECTIONS, "Notes", "Examples", "See Also")
WIDTH = 100  # a signature longer than this is written one parameter per line


@dataclass
class Entry:
    """One ``name : type`` item of an entry section and its description lines."""

    name: str
    type: str
    lines: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """``a, b`` documents two parameters at once."""
        return [n.strip() for n in self.name.split(",") if n.strip()]


@dataclass
class Doc:
    """A docstring split into its summary, the text before the sections, and the sections."""

    summary: str
    body: list[str]
    sections: dict[str, list[str]]
    summary_lines: int = 1  # numpydoc wants one: a short line saying what and why

    def entries(self, section: str) -> list[Entry]:
        out: list[Entry] = []
        for line in self.sections.get(section, []):
            if line and not line[0].isspace():
                name, _, typ = line.partition(" : ")
                out.append(Entry(name.strip(), typ.strip()))
            elif out:
                out[-1].lines.append(line.strip())
        return out


def parse(doc: str | None) -> Doc:
    """Split a (cleaned, ``inspect.getdoc``) docstring at its numpydoc section headers."""
    lines = (doc or "").splitlines()
    cut = [i for i in range(len(lines) - 1)
           if lines[i].strip() in SECTIONS and set(lines[i + 1].strip()) == {"-"}]
    head = lines[: cut[0]] if cut else lines
    sections: dict[str, list[str]] = {}
    for k, start in enumerate(cut):
        end = cut[k + 1] if k + 1 < len(cut) else len(lines)
        sections[lines[start].strip()] = _trim(lines[start + 2: end])
    head = _trim(head)
    first = next((k for k, line in enumerate(head) if not line.strip()), len(head))
    return Doc(" ".join(line.strip() for line in head[:first]), _trim(head[first:]), sections, first)


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _md(text: str) -> str:
    """reST inline markup to Markdown: ``x`` and :func:`x` become `x`."""
    text = re.sub(r":(?:func|class|meth|mod|attr|data):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _text(lines: list[str]) -> str:
    """Prose lines to Markdown: ``>>>`` examples and indented blocks fenced, the rest as written."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>") or (line.startswith("    ") and (not out or not out[-1].strip())):
            block = []
            while i < len(lines) and lines[i].strip() and (lines[i].startswith(" ") or ">>>" in lines[i]):
                block.append(lines[i])
                i += 1
            indent = min(len(b) - len(b.lstrip()) for b in block)
            out += ["```python", *(b[indent:] for b in block), "```"]
            continue
        out.append(_md(line))
        i += 1
    return "\n".join(out)


def _entries(entries: list[Entry]) -> str:
    """``- `name` (type): description``; a description's own ``- `` lines stay a nested list."""
    out = []
    for e in entries:
        head = f"- `{e.name}`" + (f" ({_md(e.type)})" if e.type else "")
        words: list[str] = []
        items: list[str] = []
        for line in e.lines:
            if line.startswith("- "):
                items.append(line[2:])
            elif items and line:
                items[-1] += " " + line
            elif line:
                words.append(line)
        out.append(head + (": " + _md(" ".join(words)) if words else ""))
        out += [f"  - {_md(item)}" for item in items]
    return "\n".join(out)


def _annotation(ann) -> str:
    return ann if isinstance(ann, str) else inspect.formatannotation(ann)


def _param(p: inspect.Parameter) -> str:
    text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
    if p.annotation is not p.empty:
        text += f": {_annotation(p.annotation)}"
    if p.default is not p.empty:
        text += (" = " if p.annotation is not p.empty else "=") + repr(p.default)
    return text


def signature(name: str, obj) -> str:
    """``name(params) -> return``, one parameter per line when it does not fit in ``WIDTH``."""
    sig = inspect.signature(obj)
    parts: list[str] = []
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    star = False
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
        star = star or p.kind in (p.KEYWORD_ONLY, p.VAR_POSITIONAL)
        parts.append(_param(p))
    ret = "" if sig.return_annotation is sig.empty or inspect.isclass(obj) else \
        f" -> {_annotation(sig.return_annotation)}"
    one = f"{name}({', '.join(parts)}){ret}"
    if len(one) <= WIDTH:
        return one
    return f"{name}(\n" + "".join(f"    {p},\n" for p in parts) + f"){ret}"


def resolve(module: str, name: str):
    """The object ``module.name`` (``name`` may be ``Class.method``)."""
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def documented() -> list[tuple[str, object]]:
    """Every (qualified name, object) the page documents."""
    return [(f"{module}.{name}", resolve(module, name)) for module, names in PAGES for name in names]


def signature_names(obj) -> list[str]:
    """The names a Parameters section must list, in order: ``*args`` and ``**kwargs`` with stars."""
    sig = inspect.signature(obj)
    star = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [star.get(p.kind, "") + p.name for p in sig.parameters.values() if p.name not in ("self", "cls")]


def _object(name: str, obj) -> str:
    """One function, class or ``Class.method``: heading, signature, then the docstring as Markdown."""
    doc = parse(inspect.getdoc(obj))
    out = [f"### `{name}`", "", "```python", signature(name, obj), "```", "", _md(doc.summary), ""]
    if doc.body:
        out += [_text(doc.body), ""]
    for section, lines in doc.sections.items():  # in the docstring's own order
        body = _entries(doc.entries(section)) if section in ENTRY_SECTIONS else _text(lines)
        out += [f"**{section}**", "", body, ""]
    return "\n".join(out)


def render() -> str:
    """The whole of docs/API.md."""
    out = ["# API", "",
           "<!-- Generated by docs/make_api.py from the docstrings and signatures; do not edit by hand. "
           "tests/test_docs_api.py fails when this page is stale: run `python docs/make_api.py`. -->", "",
           "The public functions, in pipeline order (read -> encode -> model -> predict -> evaluate -> plot). "
           "Every function that returns or writes an AnnData lists each key it writes under **Returns**.", ""]
    out += [f"- [`{module}`](#{module.replace('.', '')})" for module, _ in PAGES]
    out.append("")
    for module, names in PAGES:
        mod = importlib.import_module(module)
        out += [f"## {module}", "", _md(parse(inspect.getdoc(mod)).summary), ""]
        for name in names:
            out.append(_object(name, resolve(module, name)))
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/API.md differs from the code")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        stale = not OUT.exists() or OUT.read_text() != text
        if stale:
            print(f"{OUT} is stale: run python docs/make_api.py", file=sys.stderr)
        return int(stale)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
