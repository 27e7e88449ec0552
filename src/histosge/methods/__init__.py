"""Methods: a registry of everything that predicts expression from spots, ours and the baselines.

>>> from histosge import methods
>>> methods.list_methods()                       # mean, knn, ridge, stnet, histogene, ..., histosge
>>> m = methods.create_method("ridge").fit(train, y)          # arrays: Spots + log1p expression
>>> pred = m.predict(query)                                   # (query spots x genes) float32
>>> model = methods.create_model("knn").fit(section)          # sections: AnnData in, AnnData out
>>> model.save("knn.histosge"); methods.load_model("knn.histosge").predict(section)

Like the encoder registry: each method is one file with a class registered under a name
(``register_method``) together with a :class:`MethodSpec` saying what it needs; ``create_method``
is the one door in. docs/EXTENDING.md shows how to add one.
"""

# isort: off
# Importing registers the built-in methods, in the order of the benchmark's tables.
from . import mean, knn, ridge, stnet, histogene, stage, thitogene, deepspace  # noqa: F401
from . import histosge, histosge_paper  # noqa: F401
from . import ridge_pooled, stnet_pooled, histosge_prior  # noqa: F401  (protocols R+ and G+ only)
# isort: on
from ._cohort import Cohort
from ._registry import MethodSpec, get_spec, list_methods, register_method, specs
from .base import Method, check_fit_inputs
from .section import MethodModel, create_method, create_model, load_model

__all__ = ["Cohort", "Method", "MethodModel", "MethodSpec", "check_fit_inputs", "create_method", "create_model",
           "get_spec", "list_methods", "load_model", "register_method", "specs"]
