"""``mousebrain``: squidpy's Visium mouse-brain crop in the shared data folder, as a named dataset.

After this, ``histosge recover mousebrain:crop`` (with ``HISTOSGE_DATA`` or ``--data-dir``
pointing at the data folder) reads ``visium_mouse_brain_crop/test_data.h5ad``. A dataset says
which sections the data folder holds, how to read one, which files that reads (so an output can
never overwrite them), which sections share a tissue, and which genes show its structure.
"""

from __future__ import annotations

from pathlib import Path

from histosge.datasets import Dataset, register_dataset
from histosge.read.h5ad import read_h5ad

FILE = Path("visium_mouse_brain_crop") / "test_data.h5ad"


def sections(root: Path) -> list[str]:
    return ["crop"] if (root / FILE).is_file() else []


def read(root: Path, section: str, *, image=None, check_alignment: bool = True):
    return read_h5ad(root / FILE, image=image, check_alignment=check_alignment)


register_dataset(Dataset("mousebrain", sections, read, lambda root, section: [root / FILE],
                         tissue_group=lambda section: "mouse brain", markers=("Ttr", "Nrgn", "Pcp4")))
