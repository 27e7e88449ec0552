"""``Method``: the base of every registered method (fit on training spots, predict query spots).

A method works on arrays: ``Spots`` (image features, grid rows and columns, pixel centres) and
log1p expression (spots x genes). ``fit`` sees the training spots only; ``predict`` runs what
``fit`` learned on new spots and returns float32 predictions (spots x genes). Hyperparameters
are the constructor's keyword arguments (recorded by ``get_params``), fitted attributes end in
``_`` (scikit-learn's convention), ``info`` says what the fit found (chosen k, epochs run...).

Saving needs no pickle: ``state()`` returns the fitted arrays and a JSON-able description,
``set_state`` puts them back. The default handles fitted attributes that are numpy arrays or
plain JSON values; a method holding anything else (a torch network, a fitted scaler) overrides
both (``histosge.methods._torch`` helps with networks).
"""

from __future__ import annotations

import abc
import inspect
import numbers
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from ..model import Spots

_JSON = (str, bool, type(None), list, dict, tuple)


class Method(abc.ABC):
    """Base of every registered method; see the module docstring for the contract.

    Subclasses implement ``fit(train, y, *, groups=None) -> self`` and
    ``predict(query, *, groups=None) -> np.ndarray``; a method whose spec says
    ``needs_target_expression`` also takes ``context=(spots, y)`` in ``predict``: measured spots
    of the query's section that stand in for the training spots. docs/EXTENDING.md shows one.

    Parameters
    ----------
    seed : int
        Seeds whatever the method draws at random (a method that draws nothing ignores it).
    """

    spec: ClassVar[Any]  # the MethodSpec, set by register_method

    def __init__(self, *, seed: int = 0):
        self.seed = int(seed)
        self.info: dict = {}

    # -- the contract (a subclass that lacks one cannot be instantiated) -----------------------
    @abc.abstractmethod
    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> Method:
        """Fit on the training spots ``train`` and their log1p expression ``y`` (spots x genes);
        ``groups`` names each training spot's section. Returns ``self``."""

    @abc.abstractmethod
    def predict(self, query: Spots, *, groups: np.ndarray | None = None) -> np.ndarray:
        """Predicted log1p expression at ``query`` (spots x genes, float32); ``groups`` names each
        query spot's section."""

    # -- parameters -----------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's keyword parameters (what ``get_params`` records)."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-able (what a saved method is rebuilt with)."""
        return {name: _plain(getattr(self, name)) for name in self.param_names() if name != "device"}

    @classmethod
    def schedule(cls, *, epochs: int | None = None, patience: int | None = None,
                 group_size: int | None = None) -> dict[str, Any]:
        """Constructor parameters for ``--epochs`` / ``--patience`` / ``--group-size``: by default
        the parameters of those names. Asking for one the method does not have is one error."""
        out: dict[str, Any] = {}
        names = cls.param_names()
        for flag, key, value in (("--epochs", "epochs", epochs), ("--patience", "patience", patience),
                                 ("--group-size", "group_size", group_size)):
            if value is None:
                continue
            if key not in names:
                raise InputError(f"method {cls.spec.name!r} has no {key.replace('_', ' ')}", where=flag,
                                 fix=f"drop {flag} (it sets the training schedule of methods that train a network)")
            out[key] = value
        return out

    @classmethod
    def stop_rule_params(cls) -> dict[str, Any]:
        """Constructor parameters that train the method under the benchmark's one early-stop rule
        (``histosge.model.early_stop``), inside its published number of epochs: what ``histosge
        bench`` gives every method that trains a network (not under ``--quick``). By default none:
        the method trains no network."""
        return {}

    @classmethod
    def section_model(cls, **params: Any):
        """The section-level model (``fit(sections)`` -> ``predict(adata)`` -> ``save``) that
        ``create_model`` returns for this method: a ``MethodModel`` (``HisToSGE`` overrides it).
        ``params``: the model's (``encoder``, ``n_genes``, ``seed`` ...) and the method's."""
        from ._registry import specs
        from .section import MODEL_PARAMS, MethodModel

        if cls.spec.needs_other_sections:
            usable = [s.name for s in specs() if not s.needs_other_sections]
            raise InputError(f"method {cls.spec.name!r} reads the other sections of a dataset, so it runs in "
                             "histosge bench (protocols R+ and G+) only", where="--method",
                             fix=f"use one of {', '.join(usable)}")
        if params.pop("prior", None) is not None:
            raise InputError(f"method {cls.spec.name!r} reads no prior", where="--prior",
                             fix="drop --prior, or use --method histosge")
        if params.pop("mode", None) is not None:
            raise InputError(f"method {cls.spec.name!r} has no modes", where="--mode",
                             fix="drop --mode (it chooses how the histosge method predicts)")
        model = {k: params.pop(k) for k in MODEL_PARAMS if k in params}
        return MethodModel(cls.spec.name, **model, params=params)

    def __repr__(self) -> str:
        fitted = ", fitted" if self.is_fitted else ""
        return f"{type(self).__name__}({getattr(self, 'spec', None) and self.spec.name!r}{fitted})"

    @property
    def is_fitted(self) -> bool:
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise InputError("the method is not fitted", where=type(self).__name__,
                             fix="call fit(train, y) first, or load a saved model")

    # -- state (saving without pickle) ----------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(fitted arrays by name, a JSON-able description of the other fitted values)."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {}
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray):
                arrays[key] = value
            elif isinstance(value, numbers.Number | np.generic) or isinstance(value, _JSON):
                meta[key] = _plain(value)
            else:
                raise TypeError(f"{type(self).__name__}.{key} is a {type(value).__name__}: override state() and "
                                "set_state() to save it as arrays")
        return arrays, meta

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Put back what ``state`` returned."""
        for key, value in {**meta, **arrays}.items():
            setattr(self, key, value)

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   info: dict | None = None, **runtime: Any) -> Method:
        """A fitted method rebuilt from ``get_params()``, ``state()`` and ``info``; ``runtime``:
        constructor arguments that are not saved (``device``)."""
        accepted = {k: v for k, v in runtime.items() if k in cls.param_names()}
        self = cls(**params, **accepted)
        self.set_state(arrays, meta)
        self.info = dict(info or {})
        return self


def check_fit_inputs(train: Spots, y: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """``y`` as float32, checked against ``train`` (one row per spot) and ``groups``."""
    y = np.asarray(y, np.float32)
    if y.ndim != 2:
        raise InputError(f"targets have shape {y.shape}", where="y", fix="give spots x genes")
    if len(y) != len(train):
        raise InputError(f"{len(y)} target rows for {len(train)} training spots", where="y",
                         fix="give one row of expression per training spot")
    if groups is not None and len(groups) != len(train):
        raise InputError(f"{len(groups)} groups for {len(train)} training spots", where="groups",
                         fix="give one section label per training spot")
    return y


def _plain(value: Any) -> Any:
    """numpy scalars and tuples as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "to_dict") and callable(value.to_dict):  # a TrainConfig
        return _plain(value.to_dict())
    return value
