"""The one validation-based early stop of every method that trains a network (docs/BENCHMARK.md).

HisToSGE's correction network has always stopped this way (``model.train.fit`` with
``DEFAULT_NETWORK``); ``histosge bench`` (not ``--quick``) trains the five baselines and the
paper's model with the same rule, inside each one's published number of epochs:

- a seeded ``VAL_FRACTION`` of the training spots is held out of the loss;
- before the first epoch and after every epoch the method predicts them as it predicts new
  spots, and their mean squared error on log1p expression is the validation loss (the untrained
  network is a candidate too);
- an epoch is better when it lowers the best validation loss so far by more than ``MIN_DELTA``
  (relative); the weights of the best epoch are kept;
- training stops after ``PATIENCE`` epochs in a row without a better one, and at the method's
  published epoch count at the latest.

:class:`EarlyStopping` is that rule's bookkeeping; each method supplies its own epochs and its
own prediction of the validation spots.
"""

from __future__ import annotations

import copy
import math

import numpy as np

#: Share of the training spots that validates (seeded; at least one spot).
VAL_FRACTION = 0.2
#: Epochs in a row without a better validation loss before training stops.
PATIENCE = 20
#: Relative decrease of the best validation loss that counts as better.
MIN_DELTA = 0.005


def validation_split(n: int, rng: np.random.Generator, fraction: float = VAL_FRACTION
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices, both sorted: a seeded ``fraction`` of ``n`` spots
    validates, at least one and never all (``n`` < 2: none).

    Parameters
    ----------
    n : int
        Number of training spots.
    rng : numpy.random.Generator
        Draws the permutation (the method's seeded generator).
    fraction : float
        Share that validates.

    Returns
    -------
    tuple of numpy.ndarray
        Indices that train and indices that validate.
    """
    perm = rng.permutation(n)
    n_val = min(max(1, int(round(n * fraction))), n - 1) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def mse(pred, truth) -> float:
    """Mean squared error over spots and genes (the validation loss)."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    return float(((pred - truth) ** 2).mean())


class EarlyStopping:
    """Keeps the best weights by validation loss and says when to stop (the module's rule).

    Parameters
    ----------
    patience : int
        Epochs in a row without a better validation loss before ``step`` says stop.
    min_delta : float
        Relative decrease of the best loss that counts as better.
    give_up : int, optional
        Also stop once this many epochs have run without any beating the starting weights
        (HisToSGE's residual correction, which starts at its context; not part of the rule).

    Attributes
    ----------
    best : float
        Lowest validation loss so far (inf before any).
    best_epoch : int or None
        The epoch that reached it (0: the starting weights); None before any.
    epochs : int
        Epochs reported to ``step``.
    stopped : str or None
        Why ``step`` said stop.
    """

    def __init__(self, patience: int, *, min_delta: float = MIN_DELTA, give_up: int | None = None):
        self.patience, self.min_delta, self.give_up = int(patience), float(min_delta), give_up
        self.best, self.best_epoch, self.state = math.inf, None, None
        self.epochs, self.since, self.stopped = 0, 0, None

    def start(self, loss: float, net) -> None:
        """The starting weights' validation loss: the first candidate (epoch 0)."""
        self.best, self.best_epoch, self.state = float(loss), 0, copy.deepcopy(net.state_dict())

    def better(self, loss: float) -> bool:
        """Whether ``loss`` beats the best so far by the rule's margin."""
        return loss < self.best * (1 - self.min_delta) - 1e-9

    def step(self, loss: float, net) -> bool:
        """Report one more epoch's validation loss; True when training should stop."""
        self.epochs += 1
        if self.better(loss):
            self.best, self.best_epoch, self.since = float(loss), self.epochs, 0
            self.state = copy.deepcopy(net.state_dict())
            return False
        self.since += 1
        if self.since >= self.patience:
            self.stopped = f"no better validation loss for {self.patience} epochs"
            return True
        if self.give_up and not self.best_epoch and self.epochs >= self.give_up:
            self.stopped = f"no epoch of {self.give_up} beat the untrained network"
            return True
        return False

    def restore(self, net) -> None:
        """Load the best weights into ``net`` (nothing when no loss was reported)."""
        if self.state is not None:
            net.load_state_dict(self.state)

    def record(self) -> dict:
        """What a benchmark record keeps: ``best_epoch``, ``best_val_loss`` and, when it stopped
        early, ``stopped`` (the epochs run are the method's ``epochs_run``)."""
        out = {"best_epoch": self.best_epoch, "best_val_loss": None if self.best is math.inf else self.best}
        return out | ({"stopped": self.stopped} if self.stopped else {})
