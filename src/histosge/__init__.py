"""histosge: high-resolution spatial gene expression from H&E histology (HisToSGE, done right).

Pipeline: read -> patches -> encode -> model (train/predict) -> evaluate -> plot.

    >>> import histosge
    >>> adata = histosge.read_section("dlpfc:151673")          # or a Space Ranger folder
    >>> hd = histosge.superres(adata)                           # 4x denser spots
    >>> rec = histosge.recover(adata, holdout=0.5, seed=0)      # held-out scores in rec.uns
    >>> model = histosge.HisToSGE("image").fit([a, b])           # train once ...
    >>> model.save("tissue.histosge")
    >>> out = histosge.predict("tissue.histosge", "slide.ome.tif")  # ... predict any H&E slide

Heavy modules (torch, scanpy) load on first use, so ``import histosge.read`` stays light.
"""

from .errors import EncoderError, HistosgeError, InputError, OutputError

__version__ = "0.2.0"


def read_section(source, *, image=None, data_dir=None, check_alignment=True):
    """Read a Space Ranger folder, an .h5ad, or a dataset name (``her2st:C2``) into AnnData.

    ``check_alignment=False`` reads an image that fails the alignment check (the score is
    still recorded in ``uns['histosge']['alignment']``); see :func:`histosge.read.read_section`.
    """
    from .read import read_section as _read

    return _read(source, image=image, data_dir=data_dir, check_alignment=check_alignment)


def superres(adata, image=None, **options):
    """Predict expression at 4x denser spots; see :func:`histosge.tasks.superres`."""
    from .tasks import superres as _superres

    return _superres(adata, image, **options)


def recover(adata, image=None, **options):
    """Hold out spots, predict and score them; see :func:`histosge.tasks.recover`."""
    from .tasks import recover as _recover

    return _recover(adata, image, **options)


def predict(model, source, **options):
    """Predict with a fitted or saved model on an H&E slide or a section; see
    :func:`histosge.tasks.predict`."""
    from .tasks import predict as _predict

    return _predict(model, source, **options)


def read_slide(path, *, pitch_um, spot_diameter_um, mpp=None):
    """Virtual spots on the tissue of an H&E slide; see :func:`histosge.read.slide.read_slide`."""
    from .read.slide import read_slide as _read_slide

    return _read_slide(path, pitch_um=pitch_um, spot_diameter_um=spot_diameter_um, mpp=mpp)


def __getattr__(name):  # the model object loads torch: only on first use
    if name == "HisToSGE":
        from .model import HisToSGE

        return HisToSGE
    raise AttributeError(f"module 'histosge' has no attribute {name!r}")


__all__ = ["EncoderError", "HisToSGE", "HistosgeError", "InputError", "OutputError", "predict", "read_section",
           "read_slide", "recover", "superres", "__version__"]
