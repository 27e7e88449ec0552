"""The model: ``HisToSGE`` (fit / predict / save / load), its contexts, network and training.

read -> patches -> encode -> **model** -> evaluate -> plot. ``estimator.HisToSGE`` is the one
door; ``contexts``, ``parts``, ``neighbours``, ``probe``, ``network`` and ``train`` are its pieces,
``persist`` its file format.
"""

from .contexts import Spots
from .estimator import DEFAULT_NETWORK, MODES, HisToSGE
from .network import HisToSGENet
from .train import PAPER_CONFIG, TrainConfig, Trained, fit

__all__ = ["DEFAULT_NETWORK", "MODES", "PAPER_CONFIG", "HisToSGE", "HisToSGENet", "Spots", "TrainConfig", "Trained",
           "fit"]
