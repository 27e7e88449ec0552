"""Image features of a section's spots, cut at a patch size in micrometres.

The one place where a model's physical patch size meets a section's pixels: a model trained
with 200 um patches cuts 200 um of tissue on a 0.25 um/px slide and on a 0.69 um/px one.
Features already in ``obsm['features']`` are reused when ``uns['histosge']['features']``
says they were made by the same encoder at the same patch size.
"""

from __future__ import annotations

import numpy as np

from . import keys
from .errors import InputError


def record(encoder, patch_um: float) -> dict:
    """What identifies features: the encoder, its weights and the patch size."""
    return {"encoder": encoder.name, "weights_id": str(encoder.weights_id), "patch_um": float(patch_um)}


def check_encoder(encoder, want: dict) -> None:
    """The encoder about to make a model's features must be the one its record names, weights
    included: other weights under the same name make other features without a word otherwise."""
    if not want.get("encoder"):
        return
    have = record(encoder, float(want.get("patch_um", 0.0)))
    if have["encoder"] != want["encoder"] or have["weights_id"] != str(want.get("weights_id")):
        raise InputError(f"the model was fitted on features of encoder {want['encoder']} (weights "
                         f"{want.get('weights_id')}); this run's encoder is {have['encoder']} (weights "
                         f"{have['weights_id']})", where="encoder",
                         fix="give the weights the model was trained with (--weights), or re-train the model with "
                             "these")


def stored(adata, want: dict) -> np.ndarray | None:
    """``obsm['features']`` if it was made as ``want`` says; None when absent. Features of another
    encoder are an error rather than silently wrong numbers."""
    if keys.FEATURES not in adata.obsm:
        return None
    have = keys.info(adata).get("features")
    if not isinstance(have, dict):
        return None  # features of unknown origin: encode again
    if have.get("encoder") != want["encoder"] or str(have.get("weights_id")) != want["weights_id"]:
        raise InputError(
            f"obsm['features'] were made by encoder {have.get('encoder')} ({have.get('weights_id')}), "
            f"the model needs {want['encoder']} ({want['weights_id']})",
            where="obsm['features']", fix="delete obsm['features'] so the spots are encoded again, "
            "or use a model trained with that encoder")
    if abs(float(have.get("patch_um", -1)) - want["patch_um"]) > 1e-6 * want["patch_um"]:
        return None  # another patch size: encode again
    return np.asarray(adata.obsm[keys.FEATURES], np.float32)


def encode_spots(adata, encoder, patch_um: float, *, xy: np.ndarray | None = None, image=None,
                 batch_size: int = 64, cache_dir=None, progress: bool = True) -> np.ndarray:
    """Features ``(n, encoder.dim)`` of patches ``patch_um`` wide centred on ``xy`` (default: the
    section's spots), from the section's highest-resolution image (cached on disk)."""
    from . import encode
    from .read.image import image_for

    source, scale = image_for(adata, image)
    xy = np.asarray(adata.obsm[keys.SPATIAL] if xy is None else xy, np.float64)
    side_fullres = float(patch_um) / keys.mpp(adata)  # patch side in full-resolution pixels
    return np.asarray(encode.extract(source, xy, scale, side_fullres, encoder=encoder, patch_scale=1.0,
                                     batch_size=batch_size, cache_dir=cache_dir, progress=progress,
                                     mpp=keys.mpp(adata), spot_diameter_um=keys.spot_diameter_um(adata)),
                      np.float32)


def for_model(adata, model, encoder=None, given: np.ndarray | None = None, **kw) -> np.ndarray:
    """The spots' features as a fitted or fitting ``model`` reads them: ``given``, else
    ``obsm['features']`` when its record matches ``model.encoder_``, else encoded at
    ``model.patch_um_`` (``encoder``, default ``model.build_encoder()``: built once per model;
    ``kw`` to ``encode_spots``). float32, one row per spot."""
    feats = given if given is not None else stored(adata, model.encoder_)
    if feats is None:
        encoder = encoder or model.build_encoder()
        check_encoder(encoder, model.encoder_)
        feats = encode_spots(adata, encoder, model.patch_um_, **kw)
    feats = np.asarray(feats, np.float32)
    if feats.shape[0] != adata.n_obs:
        raise InputError(f"{feats.shape[0]} feature rows for {adata.n_obs} spots", where="features",
                         fix="give one row of features per spot")
    return feats
