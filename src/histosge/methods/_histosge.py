"""What HisToSGE's three methods share (``histosge``, ``histosge-image``, ``histosge-paper``).

One constructor (every hyperparameter ``HisToSGE`` takes, whichever mode reads it, so a model file
records the same set for each), the correction network's schedule (``--epochs`` ...) and the
benchmark's early-stop rule, the novelty score (how far a spot's image lies from the training
images), the out-of-sample scores of the training spots, and saving (the network, the novelty
reference and the image probe as arrays; the network's architecture and history as JSON).

The methods work on arrays (``Spots``) like every registered method; ``histosge.model.HisToSGE``
is the section model that fits, predicts, saves and loads them (``histosge.model.section``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._json import jsonable
from ..errors import InputError
from ..evaluate import score
from ..model.contexts import Spots
from ..model.neighbours import K_CHOICES
from ..model.parts import Projector, nest, sub
from ..model.prior import DEFAULT_USES as PRIOR_DEFAULT_USES
from ..model.prior import USES as PRIOR_USES
from ..model.train import DEFAULT_NETWORK, TrainConfig, Trained
from .base import Method

#: Nearest training spots a novelty score is measured against, and the quantile of the training
#: spots' own (leave-one-out) score that counts as 1.0.
NOVELTY_K = 10
NOVELTY_QUANTILE = 0.99


class HisToSGEBase(Method):
    """The parameters of every HisToSGE method (``histosge.model.HisToSGE`` documents each):
    ``n_components``, ``outside_weight``, ``stack_image``, ``image_blend``, ``ring``, ``cv_blocks``,
    ``k_choices``, ``oof_folds``, ``network`` (a ``TrainConfig`` or a dict of its fields, over the
    mode's default schedule), ``prior_use``, ``prior_weight``, ``seed``, ``device``.

    ``fit(train, y, *, groups=None, progress=False, reliability=False, prior=None)``: ``reliability``
    also estimates each gene's held-out Pearson (``reliability_``) from the out-of-sample
    predictions the fit makes anyway; ``prior`` (``model.prior.Prior``, checked by the section
    model) is read by the neighbours mode only.
    """

    #: The mode's default network schedule.
    NETWORK: ClassVar[TrainConfig] = DEFAULT_NETWORK

    def __init__(self, *, n_components: int = 8, outside_weight: float = 0.5, stack_image: bool = True,
                 image_blend: float = 0.25, ring: int = 7, cv_blocks: int = 5,
                 k_choices: tuple[int, ...] = K_CHOICES, oof_folds: int = 5, network: TrainConfig | dict | None = None,
                 prior_use: tuple[str, ...] = PRIOR_DEFAULT_USES, prior_weight: float | None = None, seed: int = 0,
                 device: str | None = None):
        super().__init__(seed=seed)
        unknown = [u for u in prior_use if u not in PRIOR_USES]
        if unknown:
            raise InputError(f"unknown prior use {', '.join(map(str, unknown))}", where="prior_use",
                             fix=f"choose among {', '.join(PRIOR_USES)}")
        if isinstance(network, dict):
            network = self.NETWORK.replace(**network)
        self.n_components = int(n_components)
        self.outside_weight = float(outside_weight)
        self.stack_image = bool(stack_image)
        self.image_blend = float(image_blend)
        self.ring = int(ring)
        self.cv_blocks = int(cv_blocks)
        self.k_choices = tuple(int(k) for k in k_choices)
        self.oof_folds = int(oof_folds)
        self.network = network or self.NETWORK
        self.prior_use = tuple(str(u) for u in prior_use)
        if prior_weight is not None and not 0.0 <= float(prior_weight) <= 1.0:
            raise InputError(f"prior weight {prior_weight!r} is not in [0, 1]", where="prior_weight",
                             fix="e.g. prior_weight=0.5, or None to choose it on the training spots")
        self.prior_weight = None if prior_weight is None else float(prior_weight)
        self.device = device

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, JSON-ready (``network`` as a dict without seed and device)."""
        return {"n_components": self.n_components, "outside_weight": self.outside_weight,
                "stack_image": self.stack_image, "image_blend": self.image_blend, "ring": self.ring,
                "cv_blocks": self.cv_blocks, "k_choices": list(self.k_choices), "oof_folds": self.oof_folds,
                "network": {k: v for k, v in self.network.to_dict().items() if k not in ("seed", "device")},
                "seed": self.seed, "prior_use": list(self.prior_use), "prior_weight": self.prior_weight}

    @classmethod
    def schedule(cls, *, epochs=None, patience=None, group_size=None) -> dict:
        """``--epochs`` / ``--patience`` / ``--group-size`` are fields of the correction network's schedule."""
        network = {k: v for k, v in (("epochs", epochs), ("patience", patience), ("group_size", group_size))
                   if v is not None}
        return {"network": network} if network else {}

    @classmethod
    def stop_rule_params(cls) -> dict:
        """The correction network stopped by the benchmark's rule (``model.early_stop``): HisToSGE's
        own default schedule (``DEFAULT_NETWORK``) is that rule, so this changes nothing there; the
        paper's model (1000 fixed epochs) gets the rule's validation inside its 1000 epochs."""
        from ..model.early_stop import MIN_DELTA, PATIENCE, VAL_FRACTION

        return {"network": {"patience": PATIENCE, "val_fraction": VAL_FRACTION, "min_delta": MIN_DELTA}}

    def fit_record(self) -> dict:
        """``info`` and the correction network's whole training history."""
        return {**self.info, "history": self.network_.history}

    def _config(self) -> TrainConfig:
        return self.network.replace(seed=self.seed, device=self.device)

    def _start(self, train: Spots, reliability: bool) -> None:
        """What every mode's ``fit`` begins with."""
        self.n_features_in_ = int(train.features.shape[1])
        self.info = {}
        self.reliability_ = None

    # -- novelty and training scores ------------------------------------------------------------
    def _fit_novelty(self, features: np.ndarray) -> None:
        """How far a new spot's image lies from the training spots': the mean distance to its
        ``NOVELTY_K`` nearest training spots in the probe's standardised feature space, in units
        of the training spots' own ``NOVELTY_QUANTILE`` (leave-one-out)."""
        from scipy.spatial import cKDTree

        ref = self.probe_.standardised(features).astype(np.float32)
        k = min(NOVELTY_K, len(ref) - 1)
        dist = cKDTree(ref).query(ref, k=k + 1)[0].reshape(len(ref), -1)[:, 1:]
        scale = float(np.quantile(dist.mean(1), NOVELTY_QUANTILE)) or 1.0
        self.novelty_ = {"reference": ref, "scale": scale}

    def novelty(self, features: np.ndarray) -> np.ndarray:
        """How far each spot's image lies from the training images: a warning that a prediction extrapolates.

        Parameters
        ----------
        features : ndarray
            Image features as the method sees them (spots x features; image mode: with rings).

        Returns
        -------
        ndarray
            float32 per spot; 1.0 is as far from the training images as the farthest 1% of
            training spots are from the others (``obs['novel']`` marks spots above 1).
        """
        from scipy.spatial import cKDTree

        ref = self.novelty_["reference"]
        k = min(NOVELTY_K, len(ref))
        dist = cKDTree(ref).query(self.probe_.standardised(features), k=k)[0].reshape(len(features), -1)
        return (dist.mean(1) / self.novelty_["scale"]).astype(np.float32)

    def _scores_from(self, oof: np.ndarray | None, y: np.ndarray,
                     scope: str = "training spots predicted without themselves (leave-one-out neighbours, "
                                  "out-of-fold image)") -> None:
        if oof is None:
            self.scores_ = {"scope": "none: the paper's model keeps no spot out of training"}
            return
        s = score(y, np.maximum(oof, 0))
        self.scores_ = {"scope": scope, **{k: round(float(s[k]), 4) for k in ("pcc", "pcc_top50", "mse", "mae")}}

    # -- predicting -----------------------------------------------------------------------------
    def predict(self, query: Spots, *, groups: np.ndarray | None = None, context=None) -> np.ndarray:
        """Predicted log1p expression at ``query`` (spots x genes, float32, >= 0); ``context``:
        (spots, log1p expression) measured on the query's section (neighbours mode)."""
        self.check_fitted()
        return self._predict(query, groups, context)[0]

    def predict_novelty(self, query: Spots, *, groups: np.ndarray | None = None, context=None):
        """(predictions, each spot's :meth:`novelty`): what the section model writes."""
        self.check_fitted()
        pred, seen = self._predict(query, groups, context)
        return pred, self.novelty(seen)

    def _predict(self, query: Spots, groups, context) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, the features the image probe saw: what novelty is measured on)."""
        raise NotImplementedError

    # -- state ----------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(the network's, the novelty reference's and the image probe's arrays, with the mode's own;
        the network's architecture and history, the novelty scale)."""
        arrays = nest("network", self.network_.state()) | {"novelty.reference": self.novelty_["reference"]}
        return arrays | self._mode_state(), {"network": self.network_.meta(),
                                             "history": jsonable(self.network_.history),
                                             "novelty_scale": self.novelty_["scale"]}

    def _mode_state(self) -> dict[str, np.ndarray]:
        return nest("probe", self.probe_.state())

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.network_ = Trained.from_state(sub(arrays, "network"), meta["network"], device=self.device)
        self.network_.history = meta.get("history", {})
        self.novelty_ = {"reference": arrays["novelty.reference"], "scale": float(meta["novelty_scale"])}
        self._set_mode_state(arrays)

    def _set_mode_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.probe_ = Projector.from_state(sub(arrays, "probe"))

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   info: dict | None = None, **runtime: Any) -> HisToSGEBase:
        """As ``Method.from_state``; ``runtime`` may also hold what the section model knows and the
        method's arrays do not: ``prior`` (a ``model.prior.Prior``, rebuilt from the file's
        ``prior.`` arrays) and ``pitch_um`` (the training pitch, from the file's geometry)."""
        prior, pitch = runtime.pop("prior", None), runtime.pop("pitch_um", None)
        accepted = {k: v for k, v in runtime.items() if k in cls.param_names()}
        self = cls(**params, **accepted)
        self.info = dict(info or {})
        self.prior_ = prior
        self.pitch_um = float("nan") if pitch is None else float(pitch)
        self.set_state(arrays, meta)
        return self


def short_history(history: dict) -> dict:
    """What a model file and ``info`` keep of the network's training history (no per-epoch losses)."""
    keys_ = ("epochs_run", "initial_val_loss", "best_val_loss", "best_epoch", "seconds", "skipped", "stopped",
             "outcome")
    return {k: history[k] for k in keys_ if k in history}
