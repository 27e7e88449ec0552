"""``histosge``: our model (``histosge.model.HisToSGE``) as a registered method.

The method wraps ``HisToSGE`` in neighbours mode (``superres``, ``recover``, protocols R and G):
the measured neighbours' expression as context, the image, and a correction network
(docs/MODEL_NOTES.md). ``mode="image"`` is the model that predicts an unmeasured section or a
slide from its image alone; the benchmark's protocol X fits it on the training sections, saves
it to a model file and loads it back, as ``histosge train`` / ``histosge predict`` do (the spec's
``cross_section``). Its section-level model (``create_model``) is ``HisToSGE`` itself, with its
own model file, novelty scores and held-out training scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import HisToSGE, Spots
from ._registry import builtin
from .base import Method, _plain


@builtin("histosge")  # its spec: methods/_builtin.py
class HisToSGEMethod(Method):
    """``mode``: ``"neighbours"`` (default) or ``"image"``; ``network``: the correction network's
    schedule and size (a ``TrainConfig`` or a dict of its fields); ``options``: any other
    ``HisToSGE`` constructor argument (``n_components``, ``image_blend``, ``k_choices`` ...)."""

    MODE = "neighbours"

    def __init__(self, *, mode: str | None = None, network: Any = None, seed: int = 0, device: str | None = None,
                 **options: Any):
        super().__init__(seed=seed)
        self.mode = mode or self.MODE
        self.network, self.device, self.options = network, device, dict(options)

    def get_params(self) -> dict[str, Any]:
        return {"mode": self.mode, "network": _plain(self.network), "seed": self.seed, **_plain(self.options)}

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

    @classmethod
    def section_model(cls, **params: Any) -> HisToSGE:
        """The section-level model: ``HisToSGE`` itself (``params``: its constructor's)."""
        mode = params.pop("mode", None) or cls.MODE
        return HisToSGE(mode, **params)

    def _model(self) -> HisToSGE:
        # The benchmark scores held-out spots itself: no per-gene reliability estimate (the paper's
        # would refit its network) unless the options ask for one.
        options = {"reliability": False, **self.options}
        return HisToSGE(self.mode, network=self.network, seed=self.seed, device=self.device, **options)

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> HisToSGEMethod:
        self.model_ = self._model().fit_spots(train, y, groups=groups, progress=False)
        self.info = {**self.model_.info_, "history": self.model_.network_.history}
        return self

    def predict(self, query: Spots, *, groups: np.ndarray | None = None) -> np.ndarray:
        self.check_fitted()
        return self.model_.predict_spots(query, groups=groups)

    def state(self):
        from ..model.persist import describe

        return dict(self.model_.state()), {"model": describe(self.model_)}

    def set_state(self, arrays, meta) -> None:
        from ..model.persist import rebuild

        self.model_ = rebuild(meta["model"], arrays, where=f"method {self.spec.name!r}", device=self.device)
