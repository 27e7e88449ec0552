"""The model: ``SectionModel`` (any registered method on sections: fit / predict / save / load),
``HisToSGE`` (the section model of our three methods), and the pieces the methods are built of.

read -> patches -> encode -> **model** -> evaluate -> plot. ``section.SectionModel`` is the one
model class and ``persist`` its file format; ``estimator.HisToSGE`` keeps HisToSGE's constructor
and file layout; ``contexts``, ``parts``, ``neighbours``, ``probe``, ``network`` and ``train`` are
what the methods (``histosge.methods``) are made of. The names below are imported on first use
(PEP 562), so that ``histosge.model.persist.read_description`` reads a model file's description
without torch.
"""

from .._lazy import lazy_names

_LAZY = {"Spots": ".contexts", "DEFAULT_NETWORK": ".train", "MODES": ".estimator", "HisToSGE": ".estimator",
         "SectionModel": ".section", "HisToSGENet": ".network", "PAPER_CONFIG": ".train", "TrainConfig": ".train",
         "Trained": ".train", "fit": ".train"}

__getattr__ = lazy_names(__name__, _LAZY, globals())

__all__ = ["DEFAULT_NETWORK", "MODES", "PAPER_CONFIG", "HisToSGE", "HisToSGENet", "SectionModel", "Spots",
           "TrainConfig", "Trained", "fit"]
