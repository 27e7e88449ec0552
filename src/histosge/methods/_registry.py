"""The method registry: one entry per method, a class plus the spec that says what it needs.

Like the encoder registry (``histosge.encode``) and timm's ``register_model``: a class is
registered under a name with a :class:`MethodSpec` that carries everything a caller must know
about it (how long ``--quick`` trains it, whether it needs the target section's measured
expression, whether it reads grid positions or the image, whether the default benchmark runs
it, which paper it reproduces), so that no other module compares method names as strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .._plugins import import_target
from ..errors import InputError


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """What a method is and needs, independent of any fit.

    Everything a caller must know about a method travels with its registration, so that no
    other module compares method names as strings.

    Attributes
    ----------
    name : str
        The name ``create_method``, ``--method`` and ``--methods`` take.
    target : type or str
        The method's class (a :class:`~histosge.methods.Method`), or where it lives as
        ``"module:Class"``, imported on first use (``cls``): listing methods imports no torch.
    description : str
        One line: what the method does, and the paper it reproduces.
    quick_epochs : int or None
        Training length under ``histosge bench --quick`` (a smoke test); None: the method does not
        train a network (``cls.schedule`` maps it onto the class's own parameters).
    needs_target_expression : bool
        It predicts a spot from the measured expression of the *same* section (its measured spots
        are the context): it runs on a section, never on an H&E image alone, nor in protocol X.
    reads_positions : bool
        It reads grid positions (``array_row``/``array_col``); protocol X hands it one constant
        position, since another section's array says nothing about the target's tissue.
    reads_image : bool
        It reads image features (the encoder's output); when False nothing is encoded for it.
    default : bool
        In the default benchmark suite (``histosge bench`` without ``--methods``).
    section_params : tuple of str
        Constructor parameters the caller fills from the data: ``"grid"`` (``"hex"`` for Visium,
        ``"square"`` for legacy ST) from the training section; ``"cohort"`` (a
        :class:`~histosge.methods.Cohort`: the other sections of the dataset, pooled, and a prior
        fitted on them) only the benchmark's protocols R+ and G+ can fill.
    fit_takes_query : bool
        ``fit`` also takes ``query=`` (the spots that will be predicted, when the caller knows
        them before fitting) and reads their grid positions, never anything measured there:
        HisToGene and THItoGene size their position tables to cover them.
    cross_section : str or None
        Protocol X through another registered method's section model (``histosge``:
        ``"histosge-image"``), fitted on the training sections, saved to a model file and loaded
        back, as ``histosge train`` / ``histosge predict`` do; None: the method itself, fitted on
        the pooled training spots of the other sections.
    model_mode : str or None
        The mode of its section model (``create_model(name).mode``) when not the one
        ``needs_target_expression`` implies ('neighbours' when it reads the measured spots, else
        'image'): ``histosge`` is 'neighbours', ``histosge-paper`` 'paper'.
    model_class : str or None
        ``"module:Class"`` of the section model ``create_model`` and ``load_model`` build for it,
        imported on first use: a subclass of ``histosge.model.SectionModel`` with a constructor
        and a model-file layout of its own (HisToSGE's three methods:
        ``histosge.model.estimator:HisToSGE``); None: ``SectionModel`` itself.
    reads_prior : bool
        Its section model takes ``prior=`` (``--prior``): an image-mode model of other sections
        of the same tissue, checked never to have seen the section (``histosge``).
    instead : str
        For a method that cannot run on one section (a cohort method): what to run instead,
        shown as the fix of the error.
    """

    name: str
    target: type | str
    description: str
    quick_epochs: int | None = None
    needs_target_expression: bool = False
    reads_positions: bool = False
    reads_image: bool = True
    default: bool = False
    section_params: tuple[str, ...] = ()
    fit_takes_query: bool = False
    cross_section: str | None = None
    model_mode: str | None = None
    model_class: str | None = None
    reads_prior: bool = False
    instead: str = ""

    @property
    def cls(self) -> type:
        """The method's class, imported on first use when registered as ``"module:Class"``."""
        target = self.target
        if isinstance(target, str):
            target = import_target(target)
            object.__setattr__(self, "target", target)
        if getattr(target, "spec", None) is not self:
            target.spec = self
        return target

    @property
    def model_cls(self) -> type:
        """The class of its section model (``model_class``, imported on first use; else ``SectionModel``)."""
        return import_target(self.model_class or "histosge.model.section:SectionModel")

    @property
    def mode(self) -> str:
        """The mode of the method's section-level model (what it predicts: 'image' any H&E,
        'neighbours' a measured section, 'paper' the authors' model), known without importing it."""
        return self.model_mode or ("neighbours" if self.needs_target_expression else "image")

    @property
    def needs_other_sections(self) -> bool:
        """It reads the other sections of the dataset (``cohort``): benchmark protocols R+ and G+."""
        return "cohort" in self.section_params


_REGISTRY: dict[str, MethodSpec] = {}

#: The names of ``MethodSpec`` a registration may set (all but ``name`` and ``target``).
SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(MethodSpec) if f.name not in ("name", "target"))
#: Entry-point group an installed package registers methods under (docs/EXTENDING.md).
ENTRY_POINT_GROUP = "histosge.methods"


def register_method(name: str, **spec: Any) -> Callable[[type], type]:
    """Class decorator: register the class under ``name`` with the rest of its :class:`MethodSpec`.

    >>> @register_method("lasso", description="Lasso on image features")
    ... class Lasso(Method): ...

    The class gets ``spec`` (its ``MethodSpec``); docs/EXTENDING.md shows a whole method.

    Parameters
    ----------
    name : str
        The method's name (what ``--method`` takes).
    **spec
        The other fields of :class:`MethodSpec` (``description``, ``quick_epochs`` ...).

    Returns
    -------
    callable
        The decorator: it registers the class and returns it unchanged (but for ``spec``).

    Raises
    ------
    TypeError
        A field ``MethodSpec`` does not have.
    ValueError
        A name registered twice (a programming error, not a user's).
    """
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        raise TypeError(f"register_method({name!r}): unknown spec field(s) {', '.join(unknown)}; "
                        f"known: {', '.join(SPEC_FIELDS)}")

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        entry = MethodSpec(name=name, target=cls, **spec)
        cls.spec = entry
        _REGISTRY[name] = entry
        return cls

    return deco


def register_lazy(name: str, target: str, **spec: Any) -> MethodSpec:
    """Register method ``name`` whose class is ``target`` (``"module:Class"``), imported on first
    use: what the built-in methods do (``methods/_builtin.py``), so that listing them or checking a
    name imports no torch. The class itself carries no decorator; ``spec.cls`` binds it.

    Parameters
    ----------
    name : str
        The method's name.
    target : str
        ``"package.module:Class"``.
    **spec
        The other fields of :class:`MethodSpec`.

    Returns
    -------
    MethodSpec
        The registration.
    """
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        raise TypeError(f"register_lazy({name!r}): unknown spec field(s) {', '.join(unknown)}")
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} registered twice")
    entry = MethodSpec(name=name, target=target, **spec)
    _REGISTRY[name] = entry
    return entry


def builtin(name: str) -> Callable[[type], type]:
    """Class decorator binding a built-in method's class to its lazy registration (``_builtin.py``)."""

    def deco(cls: type) -> type:
        entry = _REGISTRY[name]
        object.__setattr__(entry, "target", cls)
        cls.spec = entry
        return cls

    return deco


def _load_plugins() -> None:
    from .._plugins import load_entry_points

    load_entry_points(ENTRY_POINT_GROUP)


def list_methods() -> list[str]:
    """Every registered method's name, in the order they were registered.

    That is the order of the benchmark's tables: the built-in baselines, then ours, then the
    cohort methods, then any registered later.

    Returns
    -------
    list of str
        The names ``create_method`` and ``--method`` take.
    """
    _load_plugins()
    return list(_REGISTRY)


def get_spec(name: str, *, where: str = "--method") -> MethodSpec:
    """The spec of method ``name``: what it is and needs.

    Parameters
    ----------
    name : str
        A registered method's name.
    where : str
        What an error names as the place of the mistake (the option that gave ``name``).

    Returns
    -------
    MethodSpec
        The method's registration.

    Raises
    ------
    InputError
        An unknown name (the message lists the known ones).
    """
    key = str(name).strip()
    if key not in _REGISTRY:
        _load_plugins()
    if key not in _REGISTRY:
        raise InputError(f"unknown method {name!r}", where=where, fix=f"use one of {', '.join(list_methods())}")
    return _REGISTRY[key]


def specs() -> list[MethodSpec]:
    """Every registered spec, in registration order.

    Returns
    -------
    list of MethodSpec
        One per name of ``list_methods()``, in that order.
    """
    _load_plugins()
    return list(_REGISTRY.values())


def create_method(name: str, **params: Any):
    """A new, unfitted method ``name``: the one door to a method that works on arrays.

    Parameters
    ----------
    name : str
        A registered method (``list_methods()``).
    **params
        Its constructor's keyword arguments (``seed``, and the method's own: ``n_pcs`` of
        ridge, ``epochs`` of stnet ...).

    Returns
    -------
    Method
        Unfitted: ``fit(train, y)`` then ``predict(query)`` on ``Spots``.

    Raises
    ------
    InputError
        An unknown name or parameter (the message lists what is known).
    """
    import inspect

    spec = get_spec(name, where="method")
    cls = spec.cls
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    unknown = [] if takes_any else sorted(set(params) - set(cls.param_names()))
    if unknown:
        raise InputError(f"method {name!r} has no parameter {', '.join(map(repr, unknown))}", where="method",
                         fix=f"its parameters: {', '.join(cls.param_names())}")
    return cls(**params)
