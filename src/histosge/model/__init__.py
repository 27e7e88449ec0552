"""The model: ``HisToSGE`` (fit / predict / save / load), its contexts, network and training.

read -> patches -> encode -> **model** -> evaluate -> plot. ``estimator.HisToSGE`` is the one
door; ``contexts``, ``parts``, ``neighbours``, ``probe``, ``network`` and ``train`` are its pieces,
``persist`` its file format. The names below are imported on first use (PEP 562), so that
``histosge.model.persist.read_description`` reads a model file's description without torch.
"""

_LAZY = {"Spots": ".contexts", "DEFAULT_NETWORK": ".estimator", "MODES": ".estimator", "HisToSGE": ".estimator",
         "HisToSGENet": ".network", "PAPER_CONFIG": ".train", "TrainConfig": ".train", "Trained": ".train",
         "fit": ".train"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_NETWORK", "MODES", "PAPER_CONFIG", "HisToSGE", "HisToSGENet", "Spots", "TrainConfig", "Trained",
           "fit"]
