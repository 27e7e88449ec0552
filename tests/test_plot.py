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
