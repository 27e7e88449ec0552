"""Pathology foundation models built on timm's VisionTransformer (UNI, UNI2-h, Virchow2,
H-optimus-0, Prov-GigaPath).

Each entry constructs the architecture locally from the kwargs published with the weights, then
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


def _swiglu() -> dict[str, Any]:
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU}


def timm_kwargs(name: str) -> tuple[str, dict[str, Any]]:
    """(timm architecture, kwargs) for a registered ViT, exactly as its model card publishes them."""
    if name == "uni":
        return "vit_large_patch16_224", {
            "img_size": 224,
            "patch_size": 16,
            "init_values": 1e-5,
            "num_classes": 0,
            "dynamic_img_size": True,
        }
    if name == "uni2-h":
        return "vit_giant_patch14_224", {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **_swiglu(),
        }
    if name == "virchow2":
        return "vit_huge_patch14_224", {
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "reg_tokens": 4,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            **_swiglu(),
        }
    if name == "h-optimus-0":
        # vit_giant_patch14_reg4_dinov2 already sets SwiGLUPacked, SiLU, reg_tokens=4, no_embed_class
        return "vit_giant_patch14_reg4_dinov2", {
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "global_pool": "token",
            "dynamic_img_size": False,
        }
    if name == "gigapath":
        # the hub config overrides the DINOv2 defaults: 16-px patches at 224 (not 14 at 518)
        return "vit_giant_patch14_dinov2", {
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "num_classes": 0,
            "global_pool": "token",
        }
    raise KeyError(name)


def build_backbone(
    name: str, arch_overrides: dict[str, Any] | None = None, *, meta: bool = False
) -> nn.Module:
    """The bare timm model, seeded random init; ``meta=True`` builds it without memory."""
    import timm

    arch, kwargs = timm_kwargs(name)
    kwargs = {**kwargs, **(arch_overrides or {})}
    if meta:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, **kwargs)
    with seeded(0):
        return timm.create_model(arch, pretrained=False, **kwargs)


def _create(name: str, arch_overrides: dict[str, Any] | None):
    import timm

    arch, kwargs = timm_kwargs(name)
    return lambda: timm.create_model(arch, pretrained=False, **{**kwargs, **(arch_overrides or {})})


def _vit_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's converter for other ViT layouts (original DINOv2, BEiT-style ...)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state_dict, model)


def _builder(encoder_cls: type):
    def build(spec: EncoderSpec, weights: str | None, device: torch.device, arch_overrides: dict | None):
        path, weights_id = resolve_weights(spec, weights)
        if path is None:
            return encoder_cls(spec, build_backbone(spec.name, arch_overrides), weights_id=weights_id)
        sd = read_state_dict(path, where=str(path))
        model = load_weights(
            _create(spec.name, arch_overrides),
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
