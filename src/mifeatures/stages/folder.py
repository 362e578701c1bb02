"""Folder stage: one's own images (data.dataset: folder), cut to STL-10's 96×96 and written in its binary layout.

Every image file is an input of the job and of its record, each with its hash; nothing is written into the
folder. How each file becomes a 96×96 image: mifeatures.core.data.own_images.
"""

from __future__ import annotations

import argparse
import sys

from mifeatures.core.data.folder import FolderError, image_files
from mifeatures.core.data.own_images import load_folder
from mifeatures.core.data.stl10 import write_stl10_images
from mifeatures.workflow import provenance, usage


def main(argv: list[str] | None = None) -> None:
    """CLI: the folder's images as an STL-10 train_X.bin."""
    parser = argparse.ArgumentParser(prog="mifeatures folder", description=usage.summary(__doc__))
    parser.add_argument("folder", help="the folder of PNG and JPEG files (data.folder.path)")
    parser.add_argument("--out", required=True, help="path of the train_X.bin to write")
    args = parser.parse_args(argv)
    try:
        files = image_files(args.folder)
        images = load_folder(files)
    except FolderError as error:
        sys.exit(f"mifeatures folder: data.folder.path: {error}")
    write_stl10_images(images, args.out)
    inputs = {f"image[{index}]": path for index, path in enumerate(files)}
    provenance.write([args.out], provenance.record("folder", inputs, {"data.folder.path": args.folder}))
    print(f"wrote {len(files)} images of {args.folder} to {args.out}")


if __name__ == "__main__":
    main()
