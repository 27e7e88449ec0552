"""``histosge-paper``: the authors' HisToSGE (``HisToSGE.paper()``) as a registered method.

The network on image features and grid position only, the authors' schedule: 1000 fixed
epochs, groups of 50, lr 1e-3, no early stopping (``model.train.PAPER_CONFIG``).
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..model import HisToSGE
from ._registry import builtin
from .histosge import HisToSGEMethod


@builtin("histosge-paper")  # its spec: methods/_builtin.py
class HisToSGEPaper(HisToSGEMethod):
    """``HisToSGE("paper")``; the parameters are ``HisToSGEMethod``'s (``mode`` is always "paper")."""

    MODE = "paper"

    @classmethod
    def section_model(cls, **params: Any) -> HisToSGE:
        """``HisToSGE("paper")``: no other mode, no prior."""
        if params.pop("mode", None) not in (None, "paper"):
            raise InputError("method 'histosge-paper' has one mode (the authors' model)", where="--mode",
                             fix="drop --mode, or use --method histosge --mode image")
        if params.get("prior") is not None:
            raise InputError("the paper's model takes no prior", where="--prior",
                             fix="drop --prior, or use --method histosge")
        params.pop("prior", None)
        return HisToSGE("paper", **params)
