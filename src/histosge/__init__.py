"""histosge: high-resolution spatial gene expression from H&E histology (HisToSGE, done right).

Pipeline: read -> patches -> encode -> model (train/predict) -> evaluate -> plot.

    >>> import histosge
    >>> adata = histosge.read_section("dlpfc:151673")          # or a Space Ranger folder
    >>> hd = histosge.superres(adata)                           # 4x denser spots
    >>> rec = histosge.recover(adata, holdout=0.5, seed=0)      # held-out scores in rec.uns
"""

from .errors import EncoderError, HistosgeError, InputError, OutputError
from .tasks import recover, superres

__version__ = "0.1.0"


def read_section(source, *, image=None, data_dir=None):
    """Read a Space Ranger folder, an .h5ad, or a dataset name (``her2st:C2``) into AnnData."""
    from .read import read_section as _read

    return _read(source, image=image, data_dir=data_dir)


__all__ = ["EncoderError", "HistosgeError", "InputError", "OutputError", "read_section", "recover", "superres",
           "__version__"]
