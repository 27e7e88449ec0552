import matplotlib
import numpy as np

from histosge.geometry import spot_pitch
from histosge.plot import dot_size

matplotlib.use("Agg")


def _axes():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.set_aspect("equal")
    ax.set_xlim(0, 1000)
    ax.set_ylim(1000, 0)
    return fig, ax


def test_dots_fill_the_spacing_at_any_density():
    import matplotlib.pyplot as plt

    fig, ax = _axes()
    sizes = {}
    for steps in (1, 2, 3, 4):  # measured grid, then 4x, 9x, 16x
        g = np.arange(0, 1000, 100 / steps, dtype=float)
        xy = np.column_stack([a.ravel() for a in np.meshgrid(g, g)])
        assert np.isclose(spot_pitch(xy), 100 / steps)
        sizes[steps] = dot_size(ax, spot_pitch(xy))
    plt.close(fig)
    # the diameter follows the spacing: area shrinks with the square of the subdivision
    for steps in (2, 3, 4):
        assert np.isclose(sizes[1] / sizes[steps], steps**2, rtol=0.01)
    # 100 data units on a ~4 inch axes spanning 1000 units: about 0.8 x 23 points across
    box = ax.get_position()
    per_unit = box.width * 4 * 72 / 1000
    assert np.isclose(np.sqrt(sizes[1]), 0.8 * 100 * per_unit, rtol=0.01)


def _output(task="predict", n=60, genes=("A", "B", "C", "D"), cv=(0.1, 0.5, 0.3, 0.05), named=(), datasets=()):
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    X = (2 + rng.normal(0, 0.2, (n, len(genes)))).astype(np.float32)  # a narrow band far from 0
    var = pd.DataFrame({"cv_pcc": np.asarray(cv, np.float32), "reliable": np.asarray(cv) >= 0.25},
                       index=pd.Index(list(genes)))
    a = ad.AnnData(X=X, var=var)
    a.obsm["spatial"] = np.column_stack([np.arange(n) % 10 * 100.0, np.arange(n) // 10 * 100.0])
    a.uns["histosge"] = {"task": task, "gene_choice": {"named": list(named), "datasets": list(datasets)}}
    return a


def test_default_genes_follow_the_named_then_reliable_markers_then_the_most_reliable():
    from histosge.plot import default_genes

    assert default_genes(_output(named=("C",))) == ["C"]
    # her2st's markers come first when the model predicts them reliably; the rest by cv_pcc
    out = _output(genes=("PCP4", "GRB7", "ERBB2", "X"), cv=(0.9, 0.3, 0.1, 0.5), datasets=("her2st",))
    assert default_genes(out, 3) == ["GRB7", "PCP4", "X"]
    # no dataset known: the most reliable genes; a brain marker is not drawn for its name
    assert default_genes(_output(), 2) == ["B", "C"]


def test_gene_maps_scale_each_panel_to_its_values_and_title_the_trust(tmp_path, monkeypatch):
    import matplotlib.axes

    from histosge.plot import gene_maps

    seen = []
    scatter = matplotlib.axes.Axes.scatter

    def spy(self, *args, **kw):
        seen.append((kw.get("vmin"), kw.get("vmax"), self.get_title()))
        return scatter(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy)
    out = _output()
    assert gene_maps(out, tmp_path / "g.png", genes=["B"]) == ["B"]
    (vmin, vmax, title), = seen
    values = out[:, "B"].X.ravel()
    assert np.isclose(vmin, np.percentile(values, 1)) and np.isclose(vmax, np.percentile(values, 99)) and vmin > 1
    assert "cv_pcc 0.50" in title and (tmp_path / "g.png").stat().st_size > 5000
