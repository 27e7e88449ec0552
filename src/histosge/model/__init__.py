"""HisToSGE network, training and the fit-and-predict entry points."""

from .methods import DEFAULT_CONFIG, METHODS, Spots, fit_predict
from .network import HisToSGE
from .train import PAPER_CONFIG, TrainConfig, Trained, fit

__all__ = ["DEFAULT_CONFIG", "METHODS", "PAPER_CONFIG", "HisToSGE", "Spots", "TrainConfig", "Trained",
           "fit", "fit_predict"]
