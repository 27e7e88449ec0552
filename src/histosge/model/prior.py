"""A cohort prior: an image-mode model fitted on *other* sections, used inside one section.

A lab that measures one section usually has others of the same tissue. An image-mode model
fitted on them (``histosge train OTHERS --mode image``, or any method that reads the image, e.g.
``--method ridge``) has learnt from thousands of spots how this tissue's image maps to
expression. A neighbours-mode model of a new section (``HisToSGE(..., prior=...)``, ``histosge
superres/recover --prior``) reads that model's prediction at every spot as one more source, next
to the measured neighbours and the section's own image probe (``methods/histosge.py`` says where
it enters; docs/MODEL_NOTES.md section 17 what each use bought).

Its prediction at the section's training spots is out-of-sample by construction: the prior
never saw them. That is checked, never assumed (``check_unseen``: by the hashes of the spots'
counts, so a renamed, re-read or subset copy of a training section is caught, and by their
positions and per-gene-group hashes, so a copy re-saved with a gene column more or less is
too: ``provenance.spot_identity``), as are the
encoder and the physical patch size (``check_encoder``). Genes of the section the prior does
not predict are marked (``covered``) and left to the section's own data.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .contexts import Spots

#: A fitted image-mode ``histosge.model.SectionModel`` (not imported: the section model imports this module).
Model = Any

#: The uses of a prior a model can make (``HisToSGE(prior_use=...)``):
#: ``"context"``: its component scores stacked with the neighbours' and the image probe's;
#: ``"genes"``: the gene-wise image term anchored on it (ridge on the residual from the prior);
#: ``"stack"``: the final prediction mixed with the prior's, ``(1 - w) x model + w x prior``, ``w``
#: chosen on the training spots (where the prior's prediction is as honest as at new spots).
USES = ("context", "genes", "stack")
#: What a prior is used for unless told otherwise ("context" bought nothing on the benchmark's
#: sections: docs/MODEL_NOTES.md section 17).
DEFAULT_USES = ("genes", "stack")
#: The mixing weights ``"stack"`` searches.
STACK_WEIGHTS = tuple(round(float(w), 2) for w in np.arange(0.0, 1.0001, 0.05))
#: An all-zero spot's hash: identical in every section, so it proves nothing.
_EMPTY = np.frombuffer(hashlib.blake2b(b"", digest_size=8).digest(), "<u8")[0]


def identity(model: Model) -> str:
    """The prior's SHA-256: its file's when it was saved or loaded, else its arrays'."""
    from .persist import arrays_sha256

    sha = getattr(model, "file_sha256_", None)
    return sha or arrays_sha256({k: np.ascontiguousarray(v) for k, v in model.state().items()})


class Prior:
    """A fitted image-mode model (any method's: ``model.section.resolve_prior`` checks it) read for
    one section's genes.

    ``index[j]``: the prior's column of the section's gene ``j`` (-1: not predicted by the prior);
    ``covered = index >= 0``.
    """

    def __init__(self, model: Model, genes: list[str], where: str = "prior"):
        self.model = model
        self.where = where
        pos = {g: i for i, g in enumerate(model.genes_)}
        self.index = np.array([pos.get(str(g), -1) for g in genes], np.int64)
        self.covered = self.index >= 0
        if not self.covered.any():
            raise InputError(f"the prior predicts none of the {len(genes)} genes of this model "
                             f"(it predicts {len(model.genes_)}, e.g. {', '.join(model.genes_[:3])})",
                             where=where, fix="train the prior on sections of the same gene panel, or with more "
                                              "genes (histosge train ... --genes 3000)")

    @property
    def sha256(self) -> str:
        return identity(self.model)

    def check_encoder(self, encoder: dict, patch_um: float, n_features: int | None = None) -> None:
        """The prior must read the same features: the same encoder and weights, the same patch size
        in micrometres."""
        mine, theirs = dict(encoder), dict(self.model.encoder_)
        if mine.get("encoder") is None:
            raise InputError("this model does not record its image encoder, so the prior's cannot be checked "
                             "against it", where="fit_spots",
                             fix="fit with HisToSGE.fit(sections), or set encoder_ and patch_um_ before fit_spots")
        same = (mine.get("encoder") == theirs.get("encoder")
                and str(mine.get("weights_id")) == str(theirs.get("weights_id")))
        p_prior = float(self.model.patch_um_)
        if not same or not abs(float(patch_um) - p_prior) <= 1e-3 * max(p_prior, 1e-9):
            raise InputError(
                f"the prior reads {p_prior:g} um patches with {theirs.get('encoder')} ({theirs.get('weights_id')}); "
                f"this section's model {float(patch_um):g} um patches with {mine.get('encoder')} "
                f"({mine.get('weights_id')})", where=self.where,
                fix="use a prior trained with the same encoder on sections of the same platform, or the same "
                    "--encoder / --patch-scale here")
        if n_features is not None and n_features != self.model.n_features_in_:
            raise InputError(f"the prior reads {self.model.n_features_in_} features per spot, this section "
                             f"has {n_features}", where=self.where, fix="encode with the prior's encoder")

    def check_unseen(self, hashes: np.ndarray, where: str,
                     identity: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Refuse a prior that was fitted on any spot of this section (``hashes``: its spots'
        ``provenance.spot_hashes``; all-zero spots, identical everywhere, are ignored;
        ``identity``: their ``provenance.spot_identity``, checked against a prior that records
        its own, so a gene column added or dropped does not hide a spot)."""
        seen = getattr(self.model, "spot_hashes_", None)
        if seen is None:
            raise InputError("the prior does not record which spots it was fitted on, so it cannot be shown "
                             "never to have seen this section", where=self.where,
                             fix="re-train the prior with this histosge (histosge train ... --mode image)")
        hashes = np.asarray(hashes, np.uint64)
        counted = hashes != _EMPTY
        shared = np.isin(hashes, np.asarray(seen, np.uint64))
        known = getattr(self.model, "spot_groups_", None)
        if identity is not None and known is not None:
            from ..provenance import same_spots

            shared |= same_spots(identity, (self.model.spot_positions_, known))
        hashes, shared = hashes[counted], shared[counted]
        if shared.any():
            names = ", ".join(s.get("name", "?") for s in self.model.training_.get("sections", []))
            raise InputError(
                f"the prior was fitted on {int(shared.sum())} of this section's {len(hashes)} spots "
                f"(prior trained on: {names})", where=where,
                fix="use a prior trained only on other sections")

    def genes(self, spots: Spots, groups=None) -> np.ndarray:
        """The prior's prediction (log1p) of this model's genes at ``spots`` (read at their
        ``mpp``); NaN where not covered."""
        pred = self.model.predict_spots(spots, groups=groups, mpp=spots.mpp)
        out = np.full((len(spots), len(self.index)), np.nan, np.float32)
        out[:, self.covered] = pred[:, self.index[self.covered]]
        return out

    def record(self, use: tuple[str, ...]) -> dict:
        """What a model file says of its prior: identity, training sections, genes covered, uses."""
        m = self.model
        return {"sha256": self.sha256, "file_sha256": getattr(m, "file_sha256_", None),
                "training_sections": [{k: s.get(k) for k in ("name", "source", "n_spots", "fingerprint")}
                                      for s in m.training_.get("sections", [])],
                "genes_covered": int(self.covered.sum()), "genes": int(len(self.index)),
                "encoder": dict(m.encoder_), "patch_um": float(m.patch_um_), "use": list(use)}
