"""Extending histosge from outside: plugins by entry point, patch geometry, and a cache keyed on code.

A plugin is an installed package that declares ``[project.entry-points."histosge.encoders"]`` (or
``histosge.methods``, ``histosge.readers``). The tests install one as pip would leave it: a module
and a ``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt``, in a folder on the path.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PLUGIN_MODULES = ("spot_rgb_plugin", "sec_reader_plugin", "plugin_method")

ENCODER_PLUGIN = textwrap.dedent('''
    """A plugin encoder: the mean colour of the spot disc, cut with the patch geometry."""
    from histosge.encode import register_encoder
    from histosge.encode.base import Encoder

    SEEN = []  # the geometry each forward was given


    class SpotMeanRGB(Encoder):
        def forward(self, x, geometry=None):
            SEEN.append(geometry)
            if geometry is not None:  # crop the spot disc's square out of the patch
                n = x.shape[-1]
                k = max(1, int(round(n * geometry.spot_fraction / 2)))
                x = x[..., n // 2 - k:n // 2 + k, n // 2 - k:n // 2 + k]
            return x.mean(dim=(2, 3)) * SCALE


    SCALE = 1.0


    @register_encoder(name="spot-rgb", dim=3, input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                      licence="MIT", offline=True, hub_files=(), description="mean colour of the spot (a plugin)")
    def build(spec, weights, device, arch_overrides):
        return SpotMeanRGB(spec, None, weights_id="spot-rgb/1")
''')


def install(site: Path, dist: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> Path:
    """A distribution as pip installs it: modules + ``<dist>-0.1.dist-info`` with its entry points."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in entry_points.items()))
    for name, text in modules.items():
        (site / name).write_text(text)
    return site


def run_cli(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(site)]), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "histosge.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def encoder_site(tmp_path):
    return install(tmp_path / "site", "histosge-spot-rgb", {"histosge.encoders": {"spot-rgb": "spot_rgb_plugin"}},
                   {"spot_rgb_plugin.py": ENCODER_PLUGIN})


def test_an_installed_encoder_is_listed_and_works_from_the_cli(encoder_site, make_spaceranger, tmp_path):
    res = run_cli(["encoders"], encoder_site, tmp_path)
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if "spot-rgb" in line)
    assert "yes" in row and "MIT" in row
    out = tmp_path / "o.h5ad"
    res = run_cli(["superres", make_spaceranger(), "-o", out, "--encoder", "spot-rgb", "--method", "ridge",
                   "--genes", "5", "--quiet", "--cache-dir", tmp_path / "cache"], encoder_site, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    import anndata as ad

    info = ad.read_h5ad(out).uns["histosge"]
    assert info["settings"]["encoder"] == "spot-rgb" and int(info["features"]["dim"]) == 3


@pytest.fixture
def registries():
    """Snapshots of the registries and the loaded plugins, restored after the test."""
    from histosge import _plugins
    from histosge.encode import _registry as enc
    from histosge.methods import _registry as meth
    from histosge.read import resolve

    saved = dict(enc._REGISTRY), dict(meth._REGISTRY), list(resolve.READERS), dict(_plugins._loaded)
    _plugins.reload()
    yield
    for name in PLUGIN_MODULES:  # imported afresh by the next test, which registers them again
        sys.modules.pop(name, None)
    enc._REGISTRY.clear()
    enc._REGISTRY.update(saved[0])
    meth._REGISTRY.clear()
    meth._REGISTRY.update(saved[1])
    resolve.READERS[:] = saved[2]
    _plugins._loaded.clear()
    _plugins._loaded.update(saved[3])


def _section_image(tmp_path, make_spaceranger):
    """A section's full-resolution image as the encoder reads it, and its spot geometry (55 um spots)."""
    import histosge
    from histosge import keys
    from histosge.read.image import image_for

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = histosge.read_section(make_spaceranger(fullres="image.png"))
    source, scale = image_for(adata)
    return adata, source, scale, keys.mpp(adata)


def test_an_encoder_gets_the_patch_geometry(encoder_site, registries, monkeypatch, make_spaceranger, tmp_path):
    monkeypatch.syspath_prepend(str(encoder_site))
    from histosge import encode, keys

    adata, source, scale, mpp = _section_image(tmp_path, make_spaceranger)
    diameter_px = keys.spot_diameter_um(adata) / mpp
    feats = encode.extract(source, adata.obsm["spatial"][:5], scale, diameter_px, encoder="spot-rgb",
                           patch_scale=2.0, cache_dir=False, progress=False, mpp=mpp,
                           spot_diameter_um=keys.spot_diameter_um(adata))
    assert feats.shape == (5, 3)
    plugin = importlib.import_module("spot_rgb_plugin")
    g = plugin.SEEN[-1]
    assert g is not None and g.spot_diameter_um == pytest.approx(55.0) and g.input_size == 32
    assert g.patch_um == pytest.approx(110.0, rel=0.02) and g.spot_fraction == pytest.approx(0.5, rel=0.02)
    assert g.um_per_px == pytest.approx(mpp / scale)


def test_editing_a_plugin_encoder_does_not_reuse_its_cached_features(encoder_site, registries, monkeypatch,
                                                                     make_spaceranger, tmp_path):
    monkeypatch.syspath_prepend(str(encoder_site))
    from histosge import encode
    from histosge.encode import _registry

    adata, source, scale, mpp = _section_image(tmp_path, make_spaceranger)
    xy = adata.obsm["spatial"][:6]

    def features():
        return encode.extract(source, xy, scale, 40.0, encoder="spot-rgb", cache_dir=tmp_path / "cache",
                              progress=False)

    first = features()
    # the user edits forward (doubles it) and keeps weights_id: the cache must not hand back the old features
    (encoder_site / "spot_rgb_plugin.py").write_text(ENCODER_PLUGIN.replace("SCALE = 1.0", "SCALE = 2.0").replace(
        "* SCALE", "* SCALE * 1.0"))
    del _registry._REGISTRY["spot-rgb"]
    importlib.reload(importlib.import_module("spot_rgb_plugin"))
    second = features()
    np.testing.assert_allclose(second, 2 * first, rtol=1e-5)


READER_PLUGIN = textwrap.dedent('''
    """A plugin reader: a '.sec' file naming a Space Ranger folder; and a plugin method."""
    from pathlib import Path

    from histosge.read.resolve import Reader
    from histosge.read.spaceranger import read_spaceranger

    READER = Reader("sec-file", lambda p: p.is_file() and p.suffix == ".sec",
                    lambda p, image, check: read_spaceranger(Path(p.read_text().strip()), check_alignment=check))
''')

METHOD_PLUGIN = textwrap.dedent('''
    from histosge.methods import register_method
    from histosge.methods.mean import Mean


    @register_method("plugin-mean", description="the training mean, from a plugin", reads_image=False)
    class PluginMean(Mean):
        pass
''')


def test_installed_methods_and_readers_are_found(registries, monkeypatch, make_spaceranger, tmp_path):
    site = install(tmp_path / "site", "histosge-extras",
                   {"histosge.readers": {"sec": "sec_reader_plugin:READER"},
                    "histosge.methods": {"plugin-mean": "plugin_method"}},
                   {"sec_reader_plugin.py": READER_PLUGIN, "plugin_method.py": METHOD_PLUGIN})
    monkeypatch.syspath_prepend(str(site))
    import histosge
    from histosge import methods

    assert "plugin-mean" in methods.list_methods()
    (tmp_path / "x.sec").write_text(str(make_spaceranger()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = histosge.read_section(tmp_path / "x.sec")
    out = histosge.superres(adata, method="plugin-mean", n_genes=5, progress=False)
    assert out.n_obs > adata.n_obs and json.dumps(out.uns["histosge"]["settings"]["method"]) == '"plugin-mean"'


def test_a_broken_plugin_warns_and_the_rest_go_on(registries, monkeypatch, tmp_path):
    site = install(tmp_path / "site", "histosge-broken", {"histosge.encoders": {"bad": "no_such_module_xyz"}}, {})
    monkeypatch.syspath_prepend(str(site))
    from histosge import encode

    with pytest.warns(UserWarning, match="histosge plugin 'bad'.*failed to load"):
        names = encode.known_names()
    assert "he-stats" in names


def test_an_encoder_without_offline_or_hub_id_is_told_the_right_fix(registries):
    from histosge.encode import availability, get_spec, register_encoder

    @register_encoder(name="no-offline", dim=3, input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                      licence="MIT", hub_files=())
    def build(spec, weights, device, arch_overrides):  # pragma: no cover - never built here
        raise AssertionError

    ok, reason = availability(get_spec("no-offline"))
    assert not ok and "offline=True" in reason and "huggingface" not in reason.lower()
