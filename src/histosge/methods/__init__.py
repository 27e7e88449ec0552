"""Methods: a registry of everything that predicts expression from spots, ours and the baselines.

>>> from histosge import methods
>>> methods.list_methods()                       # mean, knn, ridge, stnet, histogene, ..., histosge
>>> m = methods.create_method("ridge").fit(train, y)          # arrays: Spots + log1p expression
>>> pred = m.predict(query)                                   # (query spots x genes) float32
>>> model = methods.create_model("knn").fit(section)          # a SectionModel: AnnData in, AnnData out
>>> model.save("knn.histosge"); methods.load_model("knn.histosge").predict(section)

Like the encoder registry: each method is a class registered under a name (``register_method``)
together with a :class:`MethodSpec` saying what it needs; ``create_method`` is the one door in.
docs/EXTENDING.md shows how to add one, in your code or as an installed plugin (entry-point group
``histosge.methods``). The built-in methods are registered by ``_builtin`` with their classes named
as ``"module:Class"`` and imported on first use, so listing or checking a name imports no torch.
"""

from .._lazy import lazy_names
from . import _builtin  # noqa: F401 - registers the built-in methods (no class imported yet)
from ._registry import MethodSpec, create_method, get_spec, list_methods, register_method, specs

# heavy names, imported on first use (PEP 562); the section model (fit / predict / save / load on
# sections, any method) lives in histosge.model.section and is handed on here
_LAZY = {"Cohort": "histosge.methods._cohort", "Method": "histosge.methods.base",
         "check_fit_inputs": "histosge.methods.base", "SectionModel": "histosge.model.section",
         "create_model": "histosge.model.section", "load_model": "histosge.model.persist"}


__getattr__ = lazy_names(__name__, _LAZY, globals())


__all__ = ["Cohort", "Method", "MethodSpec", "SectionModel", "check_fit_inputs", "create_method", "create_model",
           "get_spec", "list_methods", "load_model", "register_method", "specs"]
