"""The rules for every numeric or choice option, in one place for the CLI and the Python API.

``validate(n_top_genes=..., seed=..., ...)`` checks the options it knows and returns them
normalised (numpy integers become ``int``, ``--device`` is parsed); anything else passes
through untouched. ``histosge.tasks`` calls it at the top of ``superres``/``recover`` and the
CLI calls it before reading anything, so ``--n-top-genes -5`` and ``superres(adata,
n_top_genes=-5)`` fail with the same line::

    --n-top-genes (n_top_genes): must be a whole number >= 0 (...), got -5 -> e.g. --n-top-genes 1000

``RULES`` also feeds the CLI help (``histosge.cli_options``), so the range a user reads in
``--help`` is the range that is enforced.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass

from .errors import InputError


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


@dataclass(frozen=True)
class Rule:
    """One option: its Python keyword, CLI flag, type, range (or choices) and an example."""

    name: str
    flag: str
    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple | None = None
    optional: bool = False  # None means "the default"
    example: str = ""
    why: str = ""

    @property
    def where(self) -> str:
        plain = "--" + self.name.replace("_", "-")
        return self.flag if plain == self.flag else f"{self.flag} ({self.name})"

    def describe(self) -> str:
        """The rule in words: 'a whole number >= 1', 'a number > 0 and < 1', 'one of 4, 9, 16'."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        what = "a whole number" if self.kind is int else "a number"
        lo = None if self.low is None else f"{'>' if self.open_low else '>='} {_num(self.low)}"
        hi = None if self.high is None else f"{'<' if self.open_high else '<='} {_num(self.high)}"
        if lo and hi and not self.open_low and not self.open_high:
            return f"{what} from {_num(self.low)} to {_num(self.high)}"
        return " and ".join([f"{what} {lo}" if lo else what] + ([hi] if hi else []))

    def check(self, value):
        if value is None:
            if self.optional:
                return None
            self._fail(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self._fail(value)
        if self.kind is int:
            if isinstance(value, numbers.Integral):
                value = int(value)
            elif math.isfinite(float(value)) and float(value).is_integer():
                value = int(value)
            else:
                self._fail(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                self._fail(value)
        if self.choices is not None:
            if value not in self.choices:
                self._fail(value)
            return value
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            self._fail(value)
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            self._fail(value)
        return value

    def _fail(self, value):
        why = f" ({self.why})" if self.why else ""
        raise InputError(
            f"must be {self.describe()}{why}, got {value!r}",
            where=self.where,
            fix=f"e.g. {self.flag} {self.example}",
        )


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("n_top_genes", "--n-top-genes", int, low=0, example="1000",
             why="highly variable genes predicted besides the named ones; 0: only the genes named with --genes"),
        Rule("seed", "--seed", int, low=0, high=2**32 - 1, example="0"),
        Rule("epochs", "--epochs", int, low=1, high=1_000_000, optional=True, example="300",
             why="0 epochs would write an untrained network's output as a prediction"),
        Rule("group_size", "--group-size", int, low=1, high=100_000, optional=True, example="50"),
        Rule("patience", "--patience", int, low=1, high=1_000_000, optional=True, example="30"),
        Rule("holdout", "--holdout", float, low=0, high=1, open_low=True, open_high=True, example="0.5"),
        Rule("patch_scale", "--patch-scale", float, low=0.25, high=8, example="2",
             why="the patch side in spot diameters; larger patches would not fit in memory"),
        Rule("batch_size", "--batch-size", int, low=1, high=4096, example="64"),
        Rule("factor", "--factor", int, choices=(4, 9, 16), example="4"),
    )
}

#: The modes of the HisToSGE model (``HisToSGE(mode=...)``, ``histosge train --mode``).
MODES = ("neighbours", "image", "paper")

_DEVICE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def parse_device(value: str | None) -> str | None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against what torch can use here.

    None (the default) lets the caller pick (CUDA when available, else CPU).
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    m = _DEVICE.match(text)
    if m is None or (m[1] != "cuda" and m[2] is not None):
        raise InputError(
            f"unknown device {value!r}", where="--device", fix="use cpu, cuda, cuda:N (N = GPU number) or mps"
        )
    kind, index = m[1], m[2]
    if kind == "cpu":
        return text  # no torch needed to know that (an error found before work imports nothing heavy)
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                "CUDA is not available here (torch sees no CUDA GPU, or this torch is a CPU-only build)",
                where="--device",
                fix="use --device cpu, or leave --device out to use a GPU when there is one",
            )
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise InputError(
                f"{text} does not exist: torch sees {count} GPU{'s' if count != 1 else ''} (cuda:0"
                f"{f' to cuda:{count - 1}' if count > 1 else ''})",
                where="--device",
                fix=f"use cuda:0{f' ... cuda:{count - 1}' if count > 1 else ''} or cpu",
            )
    elif kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(
                "MPS (Apple GPU) is not available here", where="--device", fix="use --device cpu or cuda"
            )
    return text


def check(name: str, value):
    """Validate one option by its Python keyword; returns the normalised value."""
    if name == "device":
        return parse_device(value)
    return RULES[name].check(value)


def validate(**values) -> dict:
    """Check every option ``RULES`` (or ``device``) knows; return all of them, normalised."""
    return {k: check(k, v) if (k in RULES or k == "device") else v for k, v in values.items()}


@dataclass(frozen=True)
class ModelOptions:
    """The model options ``superres`` and ``recover`` share, as one object checked once when made.

    The CLI's and the Python API's alike go from the command line to the model in it (``validate``
    checks them when it is made); recorded in ``uns['histosge']['settings']``.

    Attributes
    ----------
    method : str
        A registered method that runs on one section (``histosge methods``).
    encoder, weights : str, optional
        The image encoder's name (the model builds it once) and a local weights file.
    patch_scale : float
        Patch side in spot diameters.
    genes : tuple of str or str, optional
        Genes always predicted (names, or a text file with one per line).
    n_top_genes : int
        HVGs of the training spots predicted besides ``genes``.
    all_genes : bool
        Every gene detected in >= 1% of the training spots instead of the HVGs.
    reliability : bool
        Estimate each gene's held-out Pearson.
    epochs, group_size, patience : int, optional
        The network's schedule (a method without one refuses them).
    seed : int
        Seeds the model (and the held-out split of recover).
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    cache_dir : str, optional
        The feature cache.
    batch_size : int
        Patches encoded at once.
    prior : str, optional
        An image-mode model file fitted on other sections (methods that read one).
    """

    method: str = "histosge"
    encoder: str | None = None  # None: histosge.encode.DEFAULT_ENCODER
    weights: str | None = None
    patch_scale: float = 2.0  # patch side as a multiple of the spot diameter
    genes: tuple[str, ...] | str | None = None  # always predicted, besides the HVGs
    n_top_genes: int = 1000  # HVGs of the training spots (0: only the named genes)
    all_genes: bool = False  # every gene detected in >= 1% of the training spots instead of the HVGs
    reliability: bool = True  # estimate each gene's held-out Pearson (var['cv_pcc'])
    epochs: int | None = None
    group_size: int | None = None
    patience: int | None = None
    seed: int = 0
    device: str | None = None
    cache_dir: str | None = None
    batch_size: int = 64
    prior: str | None = None  # an image-mode model (file) fitted on other sections

    def __post_init__(self):
        for name, value in validate(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}).items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_kwargs(cls, **options) -> ModelOptions:
        """From keyword arguments, with one error for an unknown (or renamed) one."""
        if "n_genes" in options:
            raise InputError("n_genes is now n_top_genes (and genes= names genes always predicted)",
                             where="n_genes", fix=f"use n_top_genes={options['n_genes']!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise InputError(f"unknown option {', '.join(unknown)}", where=unknown[0],
                             fix=f"use the options of histosge.options.ModelOptions: {', '.join(names)}")
        return cls(**options)

    def model_params(self) -> dict:
        """What ``histosge.methods.create_model`` takes of these (the method's name apart)."""
        out = {k: getattr(self, k) for k in ("encoder", "weights", "patch_scale", "genes", "n_top_genes", "all_genes",
                                             "reliability", "seed", "device", "epochs", "patience", "group_size")}
        return out | ({"prior": self.prior} if self.prior is not None else {})

    def settings(self, encoder: str | None) -> dict:
        """The options as an output records them (``encoder``: the name of the one that ran)."""
        return {**{f.name: list(v) if isinstance(v, tuple) else v for f in dataclasses.fields(self)
                   if (v := getattr(self, f.name)) is not None}, "encoder": encoder}
