"""histosge: high-resolution spatial gene expression from H&E histology (HisToSGE, done right).

Pipeline: read -> patches -> encode -> model (train/predict) -> evaluate -> plot.

    >>> import histosge
    >>> adata = histosge.read_section("dlpfc:151673")          # or a Space Ranger folder
    >>> hd = histosge.superres(adata)                           # 4x denser spots
    >>> rec = histosge.recover(adata, holdout=0.5, seed=0)      # held-out scores in rec.uns

Heavy modules (torch, scanpy) load on first use, so ``import histosge.read`` stays light.
"""

from .errors import EncoderError, HistosgeError, InputError, OutputError

__version__ = "0.1.0"


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


__all__ = ["EncoderError", "HistosgeError", "InputError", "OutputError", "read_section", "recover", "superres",
           "__version__"]
