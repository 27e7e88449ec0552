"""Rewrite one generated section of a Markdown file, keeping the hand-written rest.

Generated sections sit between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; the test or
bench script that measured the content writes it (docs quote only numbers a command wrote).
"""

from __future__ import annotations

from pathlib import Path


def replace_section(path: str | Path, name: str, text: str) -> None:
    """Put ``text`` between the markers of section ``name`` in ``path`` (appended if absent)."""
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip() + ("\n\n" if old.strip() else "") + block + "\n"
    path.write_text(new)
