"""A model file that is safe to share: one safetensors file, its JSON description in the header.

safetensors holds only named numeric arrays and a string-to-string header, so loading a model
from a stranger cannot run code (no pickle anywhere). The description (``FORMAT``,
``SCHEMA_VERSION``, histosge version, genes, normalisation, encoder and its weights' identity,
patch size and spot geometry in micrometres, training sections, hyperparameters, the training
run's held-out scores) sits under the header key ``histosge``; a SHA-256 over every array
(name, dtype, shape, bytes) detects a file edited after it was written. Every way a file can be
unusable is one ``InputError`` naming the file and the fix.

A model fitted with a prior (``HisToSGE(prior=...)``) holds the prior whole: its description
under ``prior.description``, its arrays under ``prior.``, and ``prior.record`` (the prior's
SHA-256, training sections, genes covered, what it was used for), so the file predicts alone.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError

FORMAT = "histosge-model"
#: Bump when a reader of the previous schema would misread the file. 2: a file may hold any
#: registered method (its description then names it under ``method``; ``histosge.methods``
#: reads those); a HisToSGE model is written as in 1, and schema-1 files are read as before.
#: 3: the description holds per-gene reliability (``reliability``: cv_pcc, the rule, how it was
#: estimated) and the gene choice (``hyperparameters``: ``genes``, ``n_top_genes``, ``all_genes``
#: instead of ``n_genes``); files of schema 1-2 load without it and say so (``reliability_note_``).
SCHEMA_VERSION = 3
SUFFIX = ".histosge"


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def describe(model) -> dict:
    """The JSON description of a fitted model (what ``histosge info``-like tools can show without
    loading arrays)."""
    from .. import __version__

    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "histosge_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": model.mode,
        "hyperparameters": model.get_params(),
        "genes": list(model.genes_),
        "var": {c: list(map(str, model.var_[c])) for c in model.var_.columns},
        "normalisation": {"target_sum": 1e4, "library_size": "all genes of the spot", "transform": "log1p"},
        "encoder": dict(model.encoder_),
        "geometry": {"patch_um": model.patch_um_, "patch_scale": model.patch_scale,
                     "spot_diameter_um": model.spot_diameter_um_, "pitch_um": model.pitch_um_, "grid": model.grid_},
        "training": getattr(model, "training_", {"sections": []}),
        "scores": getattr(model, "scores_", {}),
        "info": _jsonable(getattr(model, "info_", {})),
        "network": model.network_.meta(),
        "history": _jsonable(model.network_.history),
        "novelty_scale": model.novelty_["scale"],
        "n_features_in": model.n_features_in_,
        "reliability": reliability_description(model),
        **_prior_description(model),
    }


def reliability_description(model) -> dict:
    """The model's per-gene reliability as the description holds it (or why there is none)."""
    rel = getattr(model, "reliability_", None)
    if rel is not None:
        return rel.to_json()
    return {"estimated": False, "why": getattr(model, "reliability_note_", None) or "not estimated"}


def set_reliability(model, meta: dict) -> None:
    """``reliability_`` (or ``reliability_note_``) from a description; a file older than schema 3
    has none, and the note says so."""
    from .reliability import Reliability

    rel = meta.get("reliability")
    model.reliability_ = None
    model.reliability_note_ = None
    if rel is None:
        model.reliability_note_ = (f"not estimated: the model file predates per-gene reliability (schema "
                                   f"{meta.get('schema_version')}, histosge {meta.get('histosge_version', '?')}); "
                                   "re-train it with this histosge to get cv_pcc")
    elif "cv_pcc" in rel:
        model.reliability_ = Reliability.from_json(rel, len(model.genes_))
    else:
        model.reliability_note_ = str(rel.get("why", "not estimated"))


def upgrade_params(params: dict) -> dict:
    """Hyperparameters of an older file in today's names (schema < 3: ``n_genes`` -> ``n_top_genes``)."""
    params = dict(params)
    if "n_genes" in params:
        params.setdefault("n_top_genes", params.pop("n_genes"))
    return params


def _prior_description(model) -> dict:
    prior = getattr(model, "prior_", None)
    if prior is None:
        return {}
    return {"prior": {"record": prior.record(model.prior_use), "description": describe(prior.model)}}


def save(model, path: str | os.PathLike) -> str:
    """Write ``model`` to ``path`` atomically; returns the file's SHA-256."""
    from safetensors.numpy import save_file

    from .._atomic import atomic_path
    from ..provenance import file_sha256

    if not model.encoder_.get("encoder"):
        raise InputError("the model does not record its image encoder (fitted on arrays alone)", where=str(path),
                         fix="fit with HisToSGE.fit(sections), or set encoder_ before saving")
    arrays = {k: np.ascontiguousarray(v) for k, v in model.state().items()}
    meta = describe(model)
    meta["arrays"] = {"count": len(arrays), "sha256": arrays_sha256(arrays)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={"histosge": json.dumps(meta, allow_nan=True)})
    return file_sha256(path)


def read_description(path: str | os.PathLike) -> dict:
    """The JSON description of a model file, checked (format, schema), without its arrays."""
    meta, _ = _open(path, arrays=False)
    return meta


def load(path: str | os.PathLike, *, device: str | None = None):
    """Rebuild a ``HisToSGE`` from a model file."""
    from ..provenance import file_sha256

    meta, arrays = _open(path, arrays=True)
    where = str(path)
    if "method" in meta:
        raise InputError(f"the file holds a {meta['method']!r} model, not a HisToSGE one", where=where,
                         fix="load it with histosge.methods.load_model (histosge predict does)")
    model = rebuild(meta, arrays, where=where, device=device)
    _check_encoder(model.encoder_["encoder"], where)
    model.file_sha256_ = file_sha256(path)
    return model


def rebuild(meta: dict, arrays: dict[str, np.ndarray], *, where: str, device: str | None = None):
    """A fitted ``HisToSGE`` from its description (``describe``) and arrays (``state()``), a prior
    inside it too; an incomplete description is one ``InputError`` naming ``where``."""
    from .estimator import HisToSGE
    from .parts import sub
    from .prior import Prior
    from .train import TrainConfig

    try:
        params = upgrade_params(meta["hyperparameters"])
        params["network"] = TrainConfig(**params["network"])
        model = HisToSGE(**params, device=device)
        model.genes_ = list(meta["genes"])
        import pandas as pd

        model.var_ = pd.DataFrame({c: v for c, v in meta.get("var", {}).items()}, index=pd.Index(model.genes_))
        model.encoder_ = dict(meta["encoder"])
        geo = meta["geometry"]
        model.patch_um_, model.spot_diameter_um_ = float(geo["patch_um"]), float(geo["spot_diameter_um"])
        model.pitch_um_, model.grid_ = float(geo["pitch_um"]), geo.get("grid")
        model.training_, model.scores_, model.info_ = meta["training"], meta.get("scores", {}), meta.get("info", {})
        model.n_features_in_ = int(meta["n_features_in"])
        set_reliability(model, meta)
        prior = meta.get("prior")
        if prior is not None:
            inner = rebuild(prior["description"], sub(arrays, "prior"), where=where, device=device)
            inner.file_sha256_ = prior["record"].get("file_sha256")
            model.prior = inner
            model.prior_ = Prior(inner, model.genes_, where=f"{where} (its prior)")
        model.set_state({k: v for k, v in arrays.items() if not k.startswith("prior.")}, meta)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"the model description is incomplete or inconsistent ({type(err).__name__}: {err})",
                         where=where, fix="use an intact model file written by histosge train / HisToSGE.save"
                         ) from None
    return model


def open_file(path, *, arrays: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """(description, arrays) of a model file of any method, checked (format, schema, checksum);
    every way it can be unusable is one ``InputError``."""
    return _open(path, arrays=arrays)


def _open(path, *, arrays: bool) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    where = str(path)
    fix_intact = "use an intact model file written by histosge train / HisToSGE.save (re-copy or re-train it)"
    if not path.exists():
        raise InputError("model file not found", where=where, fix="check the path")
    if not path.is_file():
        raise InputError("model path is not a file", where=where, fix="give the .histosge file")
    try:
        with safe_open(str(path), framework="np") as fh:
            header = fh.metadata() or {}
            data = {k: np.array(fh.get_tensor(k)) for k in fh.keys()} if arrays else {}
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"not a histosge model file, or truncated ({err})", where=where, fix=fix_intact) from None
    if "histosge" not in header:
        raise InputError("not a histosge model file (a safetensors file without a histosge description)",
                         where=where, fix="give a file written by histosge train / HisToSGE.save")
    try:
        meta = json.loads(header["histosge"])
    except json.JSONDecodeError as err:
        raise InputError(f"the model description is not valid JSON ({err})", where=where, fix=fix_intact) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError("not a histosge model file (unknown format)", where=where, fix=fix_intact)
    version = meta.get("schema_version")
    if not isinstance(version, int):
        raise InputError("the model description has no schema version", where=where, fix=fix_intact)
    if version > SCHEMA_VERSION:
        from .. import __version__

        raise InputError(
            f"written by histosge {meta.get('histosge_version', '?')} with model schema {version}; this histosge "
            f"{__version__} reads schema {SCHEMA_VERSION} and older", where=where,
            fix="upgrade histosge (pip install -U histosge)")
    if arrays:
        expected = (meta.get("arrays") or {}).get("sha256")
        if expected != arrays_sha256(data):
            raise InputError("the model file was changed after it was written (its arrays do not match their "
                             "checksum)", where=where, fix=fix_intact)
    return meta, data


def _check_encoder(name: str, where: str) -> None:
    from .. import encode

    if name not in encode.known_names():
        raise InputError(f"the model needs image encoder {name!r}, which this histosge does not have", where=where,
                         fix=f"install the histosge version or plugin that provides {name!r} "
                             f"(known here: {', '.join(encode.known_names())})")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
