"""A folder of one's own images as the dataset (data.dataset: folder): which files, in which order. No image
library here: the params validator lists the folder; ``mifeatures.core.data.own_images`` reads the files.

The order is that of the files' paths relative to the folder (subfolders included, hidden files and folders
left out), compared as strings.
"""

from __future__ import annotations

import os
from pathlib import Path

SUFFIXES = (".png", ".jpg", ".jpeg")


class FolderError(ValueError):
    """A folder or one of its files that cannot be the dataset; the message names it and why."""


def image_files(folder: str | Path) -> list[Path]:
    """The images of ``folder`` in the dataset's order; any other file is an error that names it.

    >>> image_files("/nonexistent")
    Traceback (most recent call last):
    ...
    mifeatures.core.data.folder.FolderError: /nonexistent: no such folder
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"{folder}: no such folder")
    files = []
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            path = Path(parent, name)
            if name.startswith("."):
                continue
            if path.suffix.lower() not in SUFFIXES:
                raise FolderError(f"{path}: not an image this dataset takes (allowed: "
                                  f"{', '.join(SUFFIXES)} files; move it out of the folder)")
            files.append(path)
    if not files:
        raise FolderError(f"{folder}: holds no {', '.join(SUFFIXES)} file")
    return sorted(files, key=lambda path: path.relative_to(folder).as_posix())
