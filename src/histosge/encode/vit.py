"""Pathology foundation models built on timm's VisionTransformer (UNI, UNI2-h, Virchow2,
H-optimus-0, Prov-GigaPath).

Each entry constructs the architecture locally from the kwargs published with the weights (carried
by its registration, ``EncoderSpec.timm_arch`` / ``timm_kwargs``, in ``_builtin.py``), then
loads a state dict (from ``weights=PATH`` or the Hugging Face hub) strictly. Building locally
instead of ``timm.create_model('hf-hub:...', pretrained=True)`` means the same code path serves a
downloaded checkpoint, a file copied by hand and a random-weight test model, and every mismatch
gets the same one-line error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._build import resolve_weights, seeded
from ._registry import EncoderSpec
from .base import ClsMeanEncoder, TimmEncoder
from .weights import load_weights, read_state_dict

HEAD_KEYS = (r"^head\.", r"^fc_norm\.", r"^head_drop\.")


def timm_kwargs(spec: EncoderSpec) -> tuple[str, dict[str, Any]]:
    """(timm architecture, kwargs) of a registered ViT, as its registration carries them (the
    model card's); ``mlp="swiglu"`` becomes timm's ``SwiGLUPacked`` MLP with SiLU."""
    kwargs = dict(spec.timm_kwargs)
    if kwargs.pop("mlp", None) == "swiglu":
        from timm.layers import SwiGLUPacked

        kwargs |= {"mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU}
    return spec.timm_arch, kwargs


def build_backbone(
    spec: EncoderSpec | str, arch_overrides: dict[str, Any] | None = None, *, meta: bool = False
) -> nn.Module:
    """The bare timm model of ``spec`` (or a registered name), seeded random init; ``meta=True``
    builds it without memory."""
    import timm

    if isinstance(spec, str):
        from ._registry import get_spec

        spec = get_spec(spec)
    arch, kwargs = timm_kwargs(spec)
    kwargs = {**kwargs, **(arch_overrides or {})}
    if meta:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, **kwargs)
    with seeded(0):
        return timm.create_model(arch, pretrained=False, **kwargs)


def _create(spec: EncoderSpec, arch_overrides: dict[str, Any] | None):
    import timm

    arch, kwargs = timm_kwargs(spec)
    return lambda: timm.create_model(arch, pretrained=False, **{**kwargs, **(arch_overrides or {})})


def _vit_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's converter for other ViT layouts (original DINOv2, BEiT-style ...)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state_dict, model)


def _builder(encoder_cls: type):
    def build(spec: EncoderSpec, weights: str | None, device: torch.device, arch_overrides: dict | None):
        path, weights_id = resolve_weights(spec, weights)
        if path is None:
            return encoder_cls(spec, build_backbone(spec, arch_overrides), weights_id=weights_id)
        sd = read_state_dict(path, where=str(path))
        model = load_weights(
            _create(spec, arch_overrides),
            sd,
            spec,
            where=str(path),
            ignore=HEAD_KEYS,
            convert=_vit_filter,
        )
        return encoder_cls(spec, model, weights_id=weights_id)

    return build



build_timm = _builder(TimmEncoder)
build_cls_mean = _builder(ClsMeanEncoder)
