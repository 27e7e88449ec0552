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

from .._json import jsonable
from ..errors import InputError
from ..model.contexts import Spots

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

    def predict_novelty(self, query: Spots, *, groups: np.ndarray | None = None,
                        **context: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(``predict``'s predictions, each spot's novelty): how far each query spot's image lies
        from the training images, 1.0 as far as the farthest 1% of training spots lie from the
        others. None (the default): the method does not measure it."""
        return self.predict(query, groups=groups, **context), None

    def fit_record(self) -> dict:
        """What a benchmark record keeps of the fit: ``info`` (a method that trains a network and
        keeps its history elsewhere adds it)."""
        return dict(self.info)

    # -- parameters -----------------------------------------------------------------------------
    @classmethod
    def fit_keywords(cls) -> frozenset[str]:
        """The keyword arguments ``fit`` takes besides ``groups``: what a section model may pass
        (``progress``, ``reliability``: the method estimates each gene's held-out Pearson itself,
        ``prior``)."""
        sig = inspect.signature(cls.fit)
        return frozenset(p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "groups")

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's keyword parameters (what ``get_params`` records)."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-able (what a saved method is rebuilt with)."""
        return {name: jsonable(getattr(self, name), drop_none=False) for name in self.param_names()
                if name != "device"}

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
                meta[key] = jsonable(value, drop_none=False)
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
