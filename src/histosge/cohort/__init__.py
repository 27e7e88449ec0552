"""Cohorts: predict many H&E slides with one saved model, resumably, here or on a Ray cluster.

    >>> from histosge.cohort import predict_cohort
    >>> res = predict_cohort("model.histosge", ["slides/"], "predictions/")            # here
    >>> res = predict_cohort("model.histosge", ["slides.csv"], "predictions/", ray=True)  # on Ray
    >>> res.outcomes                       # per slide: computed, skipped, reused or failed

One output per slide (``predictions/<slide>.h5ad``), a manifest (``predictions/manifest.csv``:
``manifest.COLUMNS``), and a rerun of the same command that skips what is done. Modules:
``slides`` (what the user named -> slide files), ``manifest`` (the output folder, records,
the model it is bound to), ``work`` (one slide: prepare, finish), ``run`` (the local loop and
the driver), ``on_ray`` (the same on Ray).
"""

from .manifest import COLUMNS, MANIFEST, read_manifest
from .run import CohortResult, predict_cohort
from .slides import Slide, resolve_slides

__all__ = ["COLUMNS", "MANIFEST", "CohortResult", "Slide", "predict_cohort", "read_manifest", "resolve_slides"]
