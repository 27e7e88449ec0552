"""A model file that is safe to share: one safetensors file, its JSON description in the header.

safetensors holds only named numeric arrays and a string-to-string header, so loading a model
from a stranger cannot run code (no pickle anywhere). The description (``FORMAT``,
``SCHEMA_VERSION``, histosge version, genes, normalisation, encoder and its weights' identity,
patch size and spot geometry in micrometres, training sections, hyperparameters, the training
run's held-out scores) sits under the header key ``histosge``. Two checksums cover the whole file:
``arrays.sha256`` over every array (name, dtype, shape, bytes) and ``integrity.sha256`` over the
description itself (canonical JSON, which holds the arrays' checksum), so no byte can change
unnoticed; ``check_consistency`` then checks what the description says against the arrays (gene
count, feature width, encoder, geometry, novelty scale) before any work, which is what older files
(schema 1-2, no description checksum) get. Every way a file can be unusable is one ``InputError``
naming the file and the fix.

``load_model`` rebuilds a file's model by its method's registered name (``method_of``: the
description's ``method``, or for the layout HisToSGE files have had since schema 1, the method of
their ``mode``), as the section-model class that method's registration names.

A model fitted with a prior (``HisToSGE(prior=...)``) holds the prior whole: its description
under ``prior.description``, its arrays under ``prior.``, and ``prior.record`` (the prior's
SHA-256, training sections, genes covered, what it was used for), so the file predicts alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, broken_link

FORMAT = "histosge-model"
#: Bump when a reader of the previous schema would misread the file. 2: a file may hold any
#: registered method (its description then names it under ``method``; ``histosge.methods``
#: reads those); a HisToSGE model is written as in 1, and schema-1 files are read as before.
#: 3: the description holds per-gene reliability (``reliability``: cv_pcc, the rule, how it was
#: estimated) and the gene choice (``hyperparameters``: ``genes``, ``n_top_genes``, ``all_genes``
#: instead of ``n_genes``), and is covered by a checksum too (``integrity.sha256``, see
#: ``description_sha256``), checked at every load; files of schema 1-2 still load, and their
#: models say what they lack (``reliability_note_``; ``integrity_['description_checksum']`` False).
SCHEMA_VERSION = 3
#: The first schema whose files carry ``integrity.sha256``.
INTEGRITY_SCHEMA = 3
SUFFIX = ".histosge"
#: HisToSGE's registered methods by mode: a description without ``method`` (the layout HisToSGE
#: files have had since schema 1) names its method by its mode.
HISTOSGE_METHODS = {"neighbours": "histosge", "image": "histosge-image", "paper": "histosge-paper"}


def method_of(meta: dict) -> str:
    """The registered name of the method a description holds: its ``method``, else (a HisToSGE
    file) the method of its mode."""
    if "method" in meta:
        return str(meta["method"])
    mode = meta.get("mode") or (meta.get("hyperparameters") or {}).get("mode") or "neighbours"
    return HISTOSGE_METHODS.get(str(mode), str(mode))


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def description_sha256(meta: dict) -> str:
    """SHA-256 of a description's canonical JSON (sorted keys, no spaces, ``integrity`` left out):
    the same for the dict written and the dict read back."""
    body = {k: v for k, v in meta.items() if k != "integrity"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """Write a model file atomically, both checksums set (what every ``save`` calls); returns the
    file's SHA-256."""
    from safetensors.numpy import save_file

    from .._atomic import atomic_path
    from ..provenance import file_sha256

    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    meta = dict(meta, arrays={"count": len(arrays), "sha256": arrays_sha256(arrays)})
    meta = json.loads(json.dumps(meta, allow_nan=True))  # what a reader gets back, tuples as lists
    meta["integrity"] = {"sha256": description_sha256(meta), "covers": "this description, arrays.sha256 covers "
                                                                       "the arrays"}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={"histosge": json.dumps(meta, allow_nan=True)})
    return file_sha256(path)


def integrity(meta: dict) -> dict:
    """What a loaded model says of its file's checks (``integrity_``): the schema, and whether the
    description was covered by a checksum (schema 3 on) or only checked for consistency."""
    version = meta.get("schema_version")
    return {"schema_version": version, "description_checksum": isinstance(version, int)
            and version >= INTEGRITY_SCHEMA, "arrays_checksum": True}


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


def read_description(path: str | os.PathLike) -> dict:
    """The JSON description of a model file, checked (format, schema), without its arrays."""
    meta, _ = _open(path, arrays=False)
    return meta


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
        raise InputError(broken_link(path) or "model file not found", where=where, fix="check the path")
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
    if version >= INTEGRITY_SCHEMA:
        recorded = (meta.get("integrity") or {}).get("sha256") if isinstance(meta.get("integrity"), dict) else None
        if recorded != description_sha256(meta):
            raise InputError("the model file was changed after it was written (its description does not match its "
                             "checksum)" if recorded else "the model description has no checksum (integrity.sha256), "
                             f"which every schema-{version} file carries", where=where, fix=fix_intact)
    if arrays:
        expected = (meta.get("arrays") or {}).get("sha256")
        if expected != arrays_sha256(data):
            raise InputError("the model file was changed after it was written (its arrays do not match their "
                             "checksum)", where=where, fix=fix_intact)
    check_consistency(meta, data if arrays else None, where=where)
    return meta, data


def load_model(path: str | os.PathLike, *, device: str | None = None) -> Any:
    """A fitted model of any method from the file its ``save`` wrote (``histosge train``).

    Parameters
    ----------
    path : str or path
        A ``.histosge`` model file.
    device : str, optional
        Where a method with a device runs (``"cpu"``, ``"cuda"``); default the best available.

    Returns
    -------
    SectionModel
        Fitted (of the class its method's registration names: a ``HisToSGE`` for HisToSGE's
        methods), with ``file_sha256_`` set.

    Raises
    ------
    InputError
        A file that is not an intact model, a newer schema, or a method or encoder this
        histosge does not have.
    """
    from ..provenance import file_sha256

    meta, arrays = open_file(path, arrays=True)
    where = str(path)
    model = rebuild(meta, arrays, where=where, device=device)
    if model.encoder_.get("encoder"):
        check_encoder_known(model.encoder_["encoder"], where)
    model._check_loaded(where)
    model.file_sha256_ = file_sha256(path)
    model.integrity_ = integrity(meta)
    if model.prior_ is not None:  # covered by the same checksums
        model.prior_.model.integrity_ = model.integrity_
    return model


def rebuild(meta: dict, arrays: dict[str, np.ndarray], *, where: str, device: str | None = None) -> Any:
    """A fitted model from a description and its arrays, by its method's registered name
    (``method_of``), as the section-model class the registration names (``spec.model_cls``)."""
    from ..methods._registry import get_spec

    name = method_of(meta)
    try:
        spec = get_spec(name, where=where)
    except InputError as err:
        raise InputError(f"the model needs method {name!r}, which this histosge does not have", where=where,
                         fix=f"install the histosge version or plugin that provides it ({err.fix})") from None
    return spec.model_cls._from_description(meta, arrays, spec, where=where, device=device)


def check_consistency(meta: dict, arrays: dict[str, np.ndarray] | None, *, where: str) -> None:
    """Everything the description says that its arrays or its other fields can contradict, checked
    before any work: one ``InputError`` naming the field. The one place for these checks, for
    every model file (HisToSGE and any method; a prior inside a model too). ``arrays`` None: the
    description alone (``read_description``)."""
    problems = _description_problems(meta, registry=arrays is not None)
    if not problems and arrays is not None and "method" not in meta:
        problems = _histosge_array_problems(meta, arrays)
    if problems:
        raise InputError(f"the model description is inconsistent: {'; '.join(problems[:3])}", where=where,
                         fix="use an intact model file written by histosge train / HisToSGE.save (re-copy or "
                             "re-train it)")


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _description_problems(meta: dict, *, registry: bool = True) -> list[str]:
    """What the description contradicts in itself (genes, feature width, encoder, geometry);
    ``registry``: also against the encoder registry (which imports torch: not for a description
    read alone)."""
    out: list[str] = []
    genes = meta.get("genes")
    if not isinstance(genes, list) or not genes or not all(isinstance(g, str) and g for g in genes):
        return ["genes is not a non-empty list of gene names"]
    if len(set(genes)) != len(genes):
        dup = sorted({g for g in genes if genes.count(g) > 1})
        out.append(f"genes names {', '.join(dup[:3])} twice")
    for col, values in (meta.get("var") or {}).items():
        if not isinstance(values, list) or len(values) != len(genes):
            out.append(f"var[{col!r}] has {len(values) if isinstance(values, list) else '?'} entries for "
                       f"{len(genes)} genes")
    rel = meta.get("reliability")
    if isinstance(rel, dict) and "cv_pcc" in rel:
        for key in ("cv_pcc", "raw_pcc"):
            values = rel.get(key)
            if not isinstance(values, list) or len(values) != len(genes):
                out.append(f"reliability[{key!r}] has {len(values) if isinstance(values, list) else '?'} entries for "
                           f"{len(genes)} genes")
            elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) and -1 <= v <= 1 for v in values):
                out.append(f"reliability[{key!r}] holds values that are not Pearson correlations (in [-1, 1])")
    n_feat = meta.get("n_features_in")
    if not isinstance(n_feat, int) or isinstance(n_feat, bool) or n_feat < 0:
        out.append(f"n_features_in {n_feat!r} is not a whole number >= 0")
        n_feat = None
    enc = meta.get("encoder") if isinstance(meta.get("encoder"), dict) else {}
    geo = meta.get("geometry") if isinstance(meta.get("geometry"), dict) else {}
    name = enc.get("encoder")
    if name is not None:
        spec = None
        if registry:
            from .. import encode

            spec = encode.get_spec(name) if name in encode.known_names() else None
        asked = (meta.get("hyperparameters") or {}).get("encoder")
        if asked is not None and str(asked).lower() != str(name).lower():
            out.append(f"the encoder is recorded as {name!r} but the model was built with {asked!r}")
        dim = enc.get("dim")
        if spec is not None and dim is not None and dim != spec.dim:
            out.append(f"encoder {name!r} makes {spec.dim} features, the description says {dim!r}")
        if n_feat is not None and dim is not None and n_feat != dim:
            out.append(f"n_features_in {n_feat} differs from the encoder's {dim!r} features")
        elif n_feat is not None and spec is not None and n_feat != spec.dim:
            out.append(f"n_features_in {n_feat} differs from encoder {name!r}'s {spec.dim} features")
        if not enc.get("weights_id"):
            out.append("the encoder's weights identity (weights_id) is missing")
        if abs(_number(enc.get("patch_um")) - _number(geo.get("patch_um"))) > 1e-6 * abs(_number(geo.get("patch_um"))):
            out.append(f"the encoder's patch_um {enc.get('patch_um')!r} differs from geometry patch_um "
                       f"{geo.get('patch_um')!r}")
    elif "method" in meta and n_feat not in (None, 0):
        out.append(f"n_features_in {n_feat} for a method that reads no image")
    patch, spot, pitch = (_number(geo.get(k)) for k in ("patch_um", "spot_diameter_um", "pitch_um"))
    scale = _number(geo.get("patch_scale", (meta.get("hyperparameters") or {}).get("patch_scale")))
    # NaN: unknown (a model fitted on arrays alone knows no sizes); anything else must be a size
    for key, value in (("patch_um", patch), ("spot_diameter_um", spot), ("pitch_um", pitch)):
        if not (math.isnan(value) or (math.isfinite(value) and value > 0)):
            out.append(f"geometry {key} {geo.get(key)!r} is not a positive number")
    if not (math.isfinite(scale) and scale > 0):
        out.append(f"geometry patch_scale {geo.get('patch_scale')!r} is not a positive number")
    if all(math.isfinite(v) and v > 0 for v in (patch, spot, scale)) and abs(patch - scale * spot) > 1e-6 * patch:
        out.append(f"geometry patch_um {patch:g} is not patch_scale {scale:g} x spot_diameter_um {spot:g}")
    grid = geo.get("grid")
    if grid is not None and grid not in ("hex", "square", "checkerboard"):
        out.append(f"geometry grid {grid!r} is not hex, square or checkerboard")
    if "method" not in meta:
        nov = _number(meta.get("novelty_scale"))
        if not (math.isfinite(nov) and nov > 0):
            out.append(f"novelty_scale {meta.get('novelty_scale')!r} is not a positive number")
        prior = meta.get("prior")
        if isinstance(prior, dict) and isinstance(prior.get("description"), dict):
            inner = _description_problems(prior["description"], registry=registry)
            out += [f"its prior: {p}" for p in inner]
    return out


def _histosge_array_problems(meta: dict, arrays: dict[str, np.ndarray], prefix: str = "") -> list[str]:
    """A HisToSGE description against its arrays: the gene count and the feature width every array
    that has one must agree on (``prefix``: a prior's arrays, ``prior.``)."""
    out: list[str] = []
    n_genes, n_feat = len(meta["genes"]), int(meta["n_features_in"])
    mode = meta.get("mode") or (meta.get("hyperparameters") or {}).get("mode")
    width = 2 * n_feat if mode == "image" else n_feat  # image mode reads each spot and its ring
    axes = {  # array -> (axis, what it must equal, what that is)
        "pca.components": (1, n_genes, "genes"), "pca.mean": (0, n_genes, "genes"),
        "measured.y": (1, n_genes, "genes"), "gene_head.coef": (0, n_genes, "genes"),
        "context.gene_head.coef": (0, n_genes, "genes"), "stack.offset": (0, n_genes, "genes"),
        "network.scaler.mean": (0, width, "features"), "probe.scaler.mean": (0, n_feat, "features"),
        "context.probe.scaler.mean": (0, width, "features"),
    }
    if mode == "paper":
        axes["network.net.head.3.bias"] = (0, n_genes, "genes")
    for name, (axis, want, what) in axes.items():
        a = arrays.get(prefix + name)
        if a is None:
            continue
        got = a.shape[axis] if a.ndim > axis else None
        if got != want:
            field = f"{len(meta['genes'])} genes" if what == "genes" else f"n_features_in {n_feat}"
            out.append(f"{field}, but {prefix}{name} is for {got} {what}")
    spots = {k: arrays[prefix + k].shape[0] for k in ("training.spot_hashes", "training.spot_positions",
                                                      "training.spot_groups") if prefix + k in arrays}
    if len(set(spots.values())) > 1:
        out.append(f"the training spots' hashes disagree on their number ({spots})")
    ref = arrays.get(prefix + "novelty.reference")
    if ref is None or ref.ndim != 2 or len(ref) < 2:
        out.append(f"{prefix}novelty.reference is missing or holds fewer than 2 spots")
    prior = meta.get("prior")
    if not out and isinstance(prior, dict) and isinstance(prior.get("description"), dict):
        out += [f"its prior: {p}" for p in _histosge_array_problems(prior["description"], arrays,
                                                                      prefix=prefix + "prior.")]
    return out[:3]


def check_encoder_known(name: str, where: str) -> None:
    """A model's encoder must be one this histosge has (built in, or a plugin's)."""
    from .. import encode

    if name not in encode.known_names():
        raise InputError(f"the model needs image encoder {name!r}, which this histosge does not have", where=where,
                         fix=f"install the histosge version or plugin that provides {name!r} "
                             f"(known here: {', '.join(encode.known_names())})")
