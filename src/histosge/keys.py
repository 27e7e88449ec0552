"""Where a section AnnData keeps what histosge reads, and the physical scale it implies.

One place for the key names (``uns['spatial'][library]``, ``uns['histosge']``) and for the
accessors every module uses, so that units are converted once: a spot's diameter in
micrometres (Visium 55 um, legacy ST 100 um) and in full-resolution pixels give the section's
pixel size, and every patch is cut at a size in micrometres.
"""

from __future__ import annotations

import anndata as ad

from .errors import InputError

SPATIAL = "spatial"
HISTOSGE = "histosge"
FEATURES = "features"

#: Spot diameter and centre-to-centre pitch in micrometres, by grid: Visium (hexagonal) and
#: legacy Spatial Transcriptomics (square; checkerboard layouts are the same arrays rotated).
PLATFORMS = {
    "hex": {"platform": "Visium", "spot_diameter_um": 55.0, "pitch_um": 100.0},
    "square": {"platform": "legacy ST", "spot_diameter_um": 100.0, "pitch_um": 200.0},
    "checkerboard": {"platform": "legacy ST", "spot_diameter_um": 100.0, "pitch_um": 200.0},
}


def info(adata: ad.AnnData) -> dict:
    """``uns['histosge']`` (empty when absent)."""
    return adata.uns.get(HISTOSGE, {}) or {}


def library_id(adata: ad.AnnData) -> str:
    """The library in ``uns['spatial']`` this section's image and scale factors live under."""
    lib = info(adata).get("library_id")
    spatial = adata.uns.get(SPATIAL, {}) or {}
    if lib is None and len(spatial):
        lib = next(iter(spatial))
    return str(lib or "section")


def grid(adata: ad.AnnData) -> str:
    """'hex' (Visium), 'square' (legacy ST) or another lattice a reader recorded."""
    value = info(adata).get("grid")
    if value is None:
        raise InputError("the spot lattice is not recorded", where="uns['histosge']['grid']",
                         fix="read the section with histosge.read_section, which detects it")
    return str(value)


def scalefactors(adata: ad.AnnData) -> dict:
    lib = library_id(adata)
    try:
        return adata.uns[SPATIAL][lib]["scalefactors"]
    except (KeyError, TypeError):
        raise InputError("no scale factors", where=f"uns['spatial']['{lib}']['scalefactors']",
                         fix="read the section with histosge.read_section, or add spot_diameter_fullres") from None


def spot_diameter_px(adata: ad.AnnData) -> float:
    """Spot diameter in full-resolution pixels (``scalefactors['spot_diameter_fullres']``)."""
    value = scalefactors(adata).get("spot_diameter_fullres")
    if value is None or not float(value) > 0:
        raise InputError("spot_diameter_fullres missing or not positive",
                         where=f"uns['spatial']['{library_id(adata)}']['scalefactors']['spot_diameter_fullres']",
                         fix="add the spot diameter in full-resolution pixels (Space Ranger's scalefactors_json.json)")
    return float(value)


def spot_diameter_um(adata: ad.AnnData) -> float:
    """Spot diameter in micrometres: recorded by the reader, else the platform's for the grid."""
    value = info(adata).get("spot_diameter_um")
    if value is not None:
        return float(value)
    return PLATFORMS.get(grid(adata), PLATFORMS["hex"])["spot_diameter_um"]


def pitch_um(adata: ad.AnnData) -> float:
    """The platform's centre-to-centre spot pitch in micrometres."""
    value = info(adata).get("pitch_um")
    if value is not None:
        return float(value)
    return PLATFORMS.get(grid(adata), PLATFORMS["hex"])["pitch_um"]


def mpp(adata: ad.AnnData) -> float:
    """Micrometres per full-resolution pixel: recorded (a slide's own metadata), else the spot
    diameter in micrometres over the same diameter in pixels."""
    value = info(adata).get("mpp")
    if value is not None:
        return float(value)
    return spot_diameter_um(adata) / spot_diameter_px(adata)
