"""Where encoder weights come from and how they are loaded, with one-line errors.

Two sources:

* ``weights=PATH``: a local ``.safetensors`` / ``.bin`` / ``.pth`` / ``.pt`` file, or a folder holding
  one (a Hugging Face snapshot folder works as it is);
* the Hugging Face hub: ``HF_TOKEN`` is read from the environment for gated models, and
  ``HF_HUB_OFFLINE=1`` is honoured (then only the local hub cache is used, and nothing touches the
  network).

Loading is strict: every key of the architecture must be filled and nothing may be left over. A
checkpoint that does not fit raises :class:`~histosge.errors.EncoderError` naming how many keys are
missing or unexpected, with an example, and what file to pass instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EncoderError
from ._registry import EncoderSpec

if TYPE_CHECKING:  # torch is imported where weights are read, not to list or check encoders
    import torch
    from torch import nn

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "teacher", "student", "module", "tile_model")
_PREFIXES = ("module.", "_orig_mod.", "backbone.", "model.", "encoder.", "trunk.", "visual.trunk.")
_TRUE = ("1", "on", "yes", "true")


# -- hub -----------------------------------------------------------------------------------------
def hub_offline() -> bool:
    """HF_HUB_OFFLINE read now (huggingface_hub reads it only once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick DNS + TCP check of the hub endpoint, so a machine without network fails in seconds
    instead of waiting through huggingface_hub's retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def torch_hub_resnet50() -> Path | None:
    """torchvision's own ResNet-50 download, if this machine ever made one (torch.hub's
    ``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``), found without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    hub_dir = Path(home) / "hub" / "checkpoints"
    hits = sorted(hub_dir.glob("resnet50-*.pth")) if hub_dir.is_dir() else []
    return hits[0] if hits else None


def hub_url(repo_id: str) -> str:
    return f"https://huggingface.co/{repo_id}"


def cached_hub_file(spec: EncoderSpec) -> str | None:
    """The path of ``spec``'s weights in the local hub cache, or None (never touches the network)."""
    if not spec.hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in spec.hub_files:
        try:
            hit = try_to_load_from_cache(spec.hub_id, filename, cache_dir=hub_cache_dir())
        except Exception:  # noqa: BLE001 - a malformed cache is the same as no cache here
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def not_cached_fix(spec: EncoderSpec) -> str:
    access = f"request access at {hub_url(spec.hub_id)}, " if spec.gated else ""
    token = "set HF_TOKEN and " if spec.gated else ""
    return f"{access}{token}run online once (HF_HUB_OFFLINE unset), or pass --weights PATH"


def fetch_from_hub(spec: EncoderSpec) -> str:
    """Download (or find in the cache) ``spec``'s weights file; one-line EncoderError on failure."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    if not spec.hub_id:
        raise EncoderError("has no hub weights", where=spec.name, fix="pass weights=PATH")
    if hub_offline():
        path = cached_hub_file(spec)
        if path is None:
            raise EncoderError(
                f"weights of {spec.hub_id} are not in the Hugging Face cache ({hub_cache_dir()}) "
                "and HF_HUB_OFFLINE is set",
                where=spec.name,
                fix=not_cached_fix(spec),
            )
        return path
    if not hub_reachable():
        cached = cached_hub_file(spec)
        if cached is not None:
            return cached
        raise EncoderError(
            f"cannot reach the Hugging Face hub to download {spec.hub_id}",
            where=spec.name,
            fix="connect to the network and "
            + not_cached_fix(spec).replace("run online once (HF_HUB_OFFLINE unset)", "run once"),
        )
    token = os.environ.get("HF_TOKEN") or None
    last: Exception | None = None
    for filename in spec.hub_files:
        try:
            return hf_hub_download(spec.hub_id, filename, token=token, cache_dir=hub_cache_dir())
        except hf_errors.RemoteEntryNotFoundError as err:  # the repo lacks this file: try the next
            last = err
            continue
        except hf_errors.GatedRepoError as err:
            raise EncoderError(
                f"{spec.hub_id} is gated and "
                + ("this HF_TOKEN has not been granted access" if token else "HF_TOKEN is not set"),
                where=spec.name,
                fix=f"request access at {hub_url(spec.hub_id)}, then export HF_TOKEN=<read token>, "
                "or pass --weights PATH",
            ) from err
        except hf_errors.RepositoryNotFoundError as err:
            raise EncoderError(
                f"the hub refused {spec.hub_id} (not found, or gated and "
                + ("this token lacks access)" if token else "HF_TOKEN is not set)"),
                where=spec.name,
                fix=f"request access at {hub_url(spec.hub_id)} and export HF_TOKEN, or pass --weights PATH",
            ) from err
        except Exception as err:  # noqa: BLE001 - network failures come in many classes
            cached = cached_hub_file(spec)
            if cached is not None:
                return cached
            raise EncoderError(
                f"cannot download {spec.hub_id} ({type(err).__name__})",
                where=spec.name,
                fix="check the network (or set HF_HUB_OFFLINE=1 to use the cache), or pass --weights PATH",
            ) from err
    raise EncoderError(
        f"{spec.hub_id} has none of {', '.join(spec.hub_files)}",
        where=spec.name,
        fix="pass --weights PATH to the checkpoint file",
    ) from last


# -- local files ---------------------------------------------------------------------------------
def find_weights_file(path: Path, spec: EncoderSpec) -> Path:
    """A weights file itself, or the one weights file inside a folder."""
    if path.is_file():
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise EncoderError(
                f"is not a weights file (expected {', '.join(WEIGHT_SUFFIXES)})",
                where=str(path),
                fix=f"pass the checkpoint of {spec.name} ({' or '.join(spec.hub_files)})",
            )
        return path
    if path.is_dir():
        for name in spec.hub_files:
            if (path / name).is_file():
                return path / name
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
        if len(found) == 1:
            return found[0]
        what = "no weights file" if not found else f"{len(found)} weights files"
        raise EncoderError(
            f"folder holds {what}",
            where=str(path),
            fix=f"pass the file itself ({' or '.join(spec.hub_files)})",
        )
    raise EncoderError("weights path does not exist", where=str(path), fix="check the --weights path")


def read_state_dict(path: str | os.PathLike, *, where: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from the usual containers (no code is unpickled)."""
    import torch

    path = Path(path)
    where = where or str(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch/safetensors raise many kinds
        first = str(err).splitlines()[0][:120] if str(err) else ""
        raise EncoderError(
            f"cannot read weights ({type(err).__name__}: {first})",
            where=where,
            fix="pass a PyTorch state dict (.bin/.pth) or .safetensors file; re-download it if truncated",
        ) from err
    return unwrap_state_dict(obj, where=where)


def unwrap_state_dict(obj: object, *, where: str) -> dict[str, torch.Tensor]:
    import torch

    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        raise EncoderError(
            "holds no state dict of tensors",
            where=where,
            fix="pass the model's weights file (a state dict), not a training checkpoint of another kind",
        )
    out = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def weights_identity(path: str | os.PathLike) -> str:
    """A short string naming these weights, stable while the file is unchanged (a cache-key part)."""
    parts = Path(path).absolute().parts  # not resolved: hub snapshot files are links into blobs/
    if "snapshots" in parts and parts.index("snapshots") >= 1:  # a hub cache file: repo@commit
        i = parts.index("snapshots")
        repo = parts[i - 1].removeprefix("models--").replace("--", "/")
        return f"hf:{repo}@{parts[i + 1]}/{'/'.join(parts[i + 2 :])}"
    p = Path(path).resolve()
    st = p.stat()
    return f"file:{p}|{st.st_size}|{st.st_mtime_ns}"


# -- loading into a module -------------------------------------------------------------------------
def _best_prefix_strip(sd: dict[str, torch.Tensor], target: set[str]) -> dict[str, torch.Tensor]:
    best, best_hits = sd, len(target.intersection(sd))
    for prefix in _PREFIXES:
        cand = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in sd.items()}
        hits = len(target.intersection(cand))
        if hits > best_hits:
            best, best_hits = cand, hits
    return best


def _example(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    return repr(keys[0]) if keys else ""


def load_weights(
    build: Callable[[], nn.Module],
    state_dict: dict[str, torch.Tensor],
    spec: EncoderSpec,
    *,
    where: str,
    ignore: Iterable[str] = (),
    convert: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None = None,
) -> nn.Module:
    """Build the model with ``build()`` and load ``state_dict`` into it strictly.

    The model is first built on the meta device (no memory, no random init: a 1.1B-parameter ViT
    costs seconds less) and the checkpoint tensors are assigned to it. ``ignore`` are regexes of
    keys to drop (classifier heads). ``convert`` (e.g. timm's ``checkpoint_filter_fn``) is tried only
    when the keys do not already match, so a correct checkpoint is loaded untouched.
    """
    import torch

    with torch.device("meta"):
        model = build()
    target = model.state_dict()
    tkeys = set(target)
    patterns = [re.compile(p) for p in ignore]
    sd = _best_prefix_strip(state_dict, tkeys)
    sd = {k: v for k, v in sd.items() if not any(p.search(k) for p in patterns) or k in tkeys}
    if set(sd) != tkeys and convert is not None:
        try:
            converted = convert(dict(sd), model)
            converted = {
                k: v for k, v in converted.items() if not any(p.search(k) for p in patterns) or k in tkeys
            }
            if len(tkeys.intersection(converted)) > len(tkeys.intersection(sd)):
                sd = converted
        except Exception:  # noqa: BLE001 - a converter that chokes means the format is not its own
            pass
    missing = tkeys - set(sd)
    unexpected = set(sd) - tkeys
    wrong = {k for k in tkeys.intersection(sd) if tuple(sd[k].shape) != tuple(target[k].shape)}
    if missing or unexpected or wrong:
        raise mismatch_error(
            spec,
            where,
            missing,
            unexpected,
            wrong_examples=[
                f"{k!r}: {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in sorted(wrong)
            ],
        )
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = build()  # non-persistent buffers cannot be assigned: build for real and copy
        model.load_state_dict(sd, strict=True)
    return model


def mismatch_error(
    spec: EncoderSpec,
    where: str,
    missing: Iterable[str],
    unexpected: Iterable[str],
    wrong_examples: list[str] | None = None,
) -> EncoderError:
    missing, unexpected, wrong_examples = list(missing), list(unexpected), list(wrong_examples or [])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {_example(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {_example(unexpected)})")
    if wrong_examples:
        problems.append(f"{len(wrong_examples)} keys of the wrong shape (e.g. {wrong_examples[0]})")
    source = f" ({spec.hub_id})" if spec.hub_id else ""
    return EncoderError(
        f"weights do not fit {spec.name}'s architecture {spec.architecture}: {'; '.join(problems)}",
        where=where,
        fix=f"pass the {spec.name} checkpoint{source}, or choose the encoder these weights belong to",
    )
