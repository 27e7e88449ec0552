"""The README's Python snippet, run as a script, leaves its figure on disk (a script has no window).

Run on the real section it names, with the fast knn method patched in for the default model (the
snippet's calls and its plot are what is tested, not the model).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    found = [b for b in blocks if "histosge.superres(" in b and "sc.pl.spatial" in b]
    assert found, "the README has no Python snippet with superres and a plot"
    return found[0]


@pytest.mark.slow
def test_readme_snippet_saves_its_plot_as_a_script(data_dir, tmp_path, monkeypatch):
    import matplotlib

    import histosge

    matplotlib.use("Agg")  # as a script without a display
    monkeypatch.setenv("HISTOSGE_DATA", str(data_dir))
    monkeypatch.chdir(tmp_path)
    for name in ("superres", "recover"):
        monkeypatch.setattr(histosge, name, functools.partial(getattr(histosge, name), method="knn", progress=False))
    code = snippet()
    exec(compile(code, str(README), "exec"), {"__name__": "__main__"})
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 10_000 for p in pngs), code
