"""Encoders that need optional packages: Owkin's Phikon / Phikon-v2 (``transformers``) and
MahmoodLab's CONCH (the ``conch`` package). Without the package they are listed as not available,
with the pip command that fixes it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import EncoderError
from ._build import RANDOM, seeded
from ._registry import EncoderSpec, require
from .base import Encoder
from .weights import (
    fetch_from_hub,
    find_weights_file,
    hub_cache_dir,
    hub_offline,
    mismatch_error,
    weights_identity,
)

# Architecture of each checkpoint, used when weights come as a bare file (no config.json beside it)
# and for random-weight tests. A folder or hub download uses the config.json that ships with it.
PHIKON_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "image_size": 224,
    "patch_size": 16,
    "qkv_bias": True,
    "layer_norm_eps": 1e-12,  # not confirmed from the hub config.json (see docs/ENCODERS.md)
}
PHIKON_V2_CONFIG: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "mlp_ratio": 4,
    "image_size": 224,
    "patch_size": 16,
    "qkv_bias": True,
    "layerscale_value": 1e-5,  # not confirmed from the hub config.json (see docs/ENCODERS.md)
    "layer_norm_eps": 1e-6,
}


class ClsTokenHF(Encoder):
    """A transformers vision model; the embedding is the class token of ``last_hidden_state``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).last_hidden_state[:, 0]


def _classes(kind: str):
    import transformers

    if kind == "vit":
        return transformers.ViTModel, transformers.ViTConfig, {"add_pooling_layer": False}
    return transformers.Dinov2Model, transformers.Dinov2Config, {}


def _transformers_model(kind: str, config: dict[str, Any]) -> nn.Module:
    """A randomly initialised (seeded) model of this architecture."""
    model_cls, config_cls, extra = _classes(kind)
    with seeded(0):
        return model_cls(config_cls(**config), **extra)


_IGNORED = ("pooler.", "mask_token")  # the pooler head is not used; mask_token only in training


def _from_folder(kind: str, folder: Path, spec: EncoderSpec, where: str) -> nn.Module:
    """transformers' own loader (it maps the hub's legacy key names), made strict."""
    import logging

    import transformers

    model_cls, _, extra = _classes(kind)
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        model, info = model_cls.from_pretrained(
            str(folder),
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **extra,
        )
    except EncoderError:
        raise
    except Exception as err:  # noqa: BLE001 - size mismatches, bad configs, unreadable files
        text = str(err).strip().splitlines()
        raise EncoderError(
            f"weights do not load into {spec.name}'s architecture {spec.architecture} "
            f"({type(err).__name__}: {text[0][:160] if text else ''})",
            where=where,
            fix=f"pass the {spec.name} checkpoint ({spec.hub_id}), "
            "or choose the encoder these weights belong to",
        ) from err
    finally:
        transformers.logging.set_verbosity(level)
    missing = [k for k in info.get("missing_keys", []) if not any(t in k for t in _IGNORED)]
    unexpected = [k for k in info.get("unexpected_keys", []) if not any(t in k for t in _IGNORED)]
    mismatched = [_mismatch_text(m) for m in (info.get("mismatched_keys") or [])]
    if missing or unexpected or mismatched:
        raise mismatch_error(spec, where, missing, unexpected, mismatched)
    return model


def _mismatch_text(item: Any) -> str:
    if isinstance(item, (tuple, list)) and len(item) == 3:
        key, ckpt, model = item
        return f"{key!r}: {tuple(ckpt)} vs {tuple(model)}"
    return repr(item[0] if isinstance(item, (tuple, list)) else item)


def _folder_for_file(weights_file: Path, kind: str, config: dict[str, Any], tmp: Path) -> Path:
    """A throw-away folder holding config.json (our published config) and a link to the file."""
    _, config_cls, _ = _classes(kind)
    config_cls(**config).save_pretrained(str(tmp))
    name = "model.safetensors" if weights_file.suffix == ".safetensors" else "pytorch_model.bin"
    os.symlink(weights_file.resolve(), tmp / name)
    return tmp


def _hub_snapshot(spec: EncoderSpec) -> Path:
    """The hub snapshot folder holding the weights and config.json (downloaded or cached)."""
    weights_file = Path(fetch_from_hub(spec))
    folder = weights_file.parent
    if not (folder / "config.json").is_file():
        from huggingface_hub import hf_hub_download

        try:
            hf_hub_download(
                spec.hub_id,
                "config.json",
                token=os.environ.get("HF_TOKEN") or None,
                cache_dir=hub_cache_dir(),
                local_files_only=hub_offline(),
            )
        except Exception as err:  # noqa: BLE001
            raise EncoderError(
                f"config.json of {spec.hub_id} is not available ({type(err).__name__})",
                where=spec.name,
                fix="run online once, or pass --weights FOLDER holding config.json and the weights",
            ) from err
    return folder


def _phikon_builder(kind: str, default_config: dict[str, Any]):
    def build(spec: EncoderSpec, weights: str | None, device: torch.device, arch_overrides: dict | None):
        require(spec)
        config = {**default_config, **(arch_overrides or {})}
        if weights is not None and str(weights) == RANDOM:
            return ClsTokenHF(spec, _transformers_model(kind, config), weights_id=RANDOM)
        if weights is None:
            folder = _hub_snapshot(spec)
            weights_file = find_weights_file(folder, spec)
            model = _from_folder(kind, folder, spec, str(folder))
        else:
            p = Path(weights).expanduser()
            weights_file = find_weights_file(p, spec)
            if p.is_dir() and (p / "config.json").is_file():
                model = _from_folder(kind, p, spec, str(p))
            else:
                with tempfile.TemporaryDirectory(prefix="histosge-hf-") as tmp:
                    folder = _folder_for_file(weights_file, kind, config, Path(tmp))
                    model = _from_folder(kind, folder, spec, str(weights_file))
        hidden = int(model.config.hidden_size)
        if hidden != spec.dim:
            raise EncoderError(
                f"weights give {hidden}-d features, {spec.name} is {spec.dim}-d",
                where=str(weights_file),
                fix=f"pass the {spec.name} checkpoint ({spec.hub_id})",
            )
        return ClsTokenHF(spec, model.float(), weights_id=weights_identity(weights_file))

    return build



build_phikon = _phikon_builder("vit", PHIKON_CONFIG)
build_phikon_v2 = _phikon_builder("dinov2", PHIKON_V2_CONFIG)
# ---------------------------------------------------------------------------------------------
# CONCH v1 (vision tower only). Needs MahmoodLab's `conch` package, which is not on PyPI under
# that name; untested here.
# ---------------------------------------------------------------------------------------------
class ConchEncoder(Encoder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x, proj_contrast=False, normalize=False)


def _build_conch(spec: EncoderSpec, weights: str | None, device: torch.device, arch_overrides: dict | None):
    require(spec)
    from conch.open_clip_custom import create_model_from_pretrained  # type: ignore[import-not-found]

    if weights is not None and str(weights) == RANDOM:
        raise EncoderError("has no random-weight mode", where=spec.name, fix="pass weights=PATH")
    path = find_weights_file(Path(weights).expanduser(), spec) if weights else Path(fetch_from_hub(spec))
    try:
        model, _ = create_model_from_pretrained("conch_ViT-B-16", checkpoint_path=str(path))
    except Exception as err:  # noqa: BLE001
        raise EncoderError(
            f"the conch package could not load these weights ({type(err).__name__})",
            where=str(path),
            fix=f"pass the CONCH checkpoint (pytorch_model.bin of {spec.hub_id})",
        ) from err
    return ConchEncoder(spec, model, weights_id=weights_identity(path))
