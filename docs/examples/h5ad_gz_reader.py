"""A reader for gzip-compressed .h5ad files (``section.h5ad.gz``), as collaborators often send them.

A reader is a name, a ``sniff(path)`` that recognises the format cheaply, and a ``read(path,
image, check_alignment)`` that returns the section AnnData. Here the file is unpacked to a
temporary .h5ad and read by the .h5ad reader, so every check of that reader runs on it.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

from histosge.read.h5ad import read_h5ad
from histosge.read.resolve import Reader, register_reader


def read_h5ad_gz(path: Path, image, check_alignment: bool):
    with tempfile.TemporaryDirectory(prefix="histosge-h5ad-gz-") as tmp:
        plain = Path(tmp) / path.name.removesuffix(".gz")
        with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        adata = read_h5ad(plain, image=image, check_alignment=check_alignment)
    adata.uns["histosge"]["source"] = str(path)  # the file the user gave, not the temporary one
    return adata


register_reader(Reader("h5ad.gz", lambda p: p.is_file() and p.name.endswith(".h5ad.gz"), read_h5ad_gz))
