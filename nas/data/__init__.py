"""Paired LR/HR super-resolution data: image folders (DIV2K layout or a tree of HR images), or the embedded photos.

``--data`` (``open_pairs(data, scale, split)``) resolves as follows:

- ``embedded``: natural RGB photos shipped with scikit-image, no download. Train split:
  astronaut, rocket, motorcycle_left, motorcycle_right (the two views of ``stereo_motorcycle``),
  immunohistochemistry, hubble_deep_field, retina. Val split: chelsea, coffee.
- a folder that holds images: they are the HR images. LR images are looked up in
  ``DIR/LR_bicubic/X{s}``, ``DIR/LR_bicubic_X{s}``, then (for ``NAME_HR``) the DIV2K sibling
  ``NAME_LR_bicubic/X{s}``.
- a folder with an ``HR`` subfolder: HR = ``DIR/HR``, LR as above in ``DIR``.
- a folder with ``*_HR`` subfolders (a DIV2K root: ``DIV2K_train_HR``, ``DIV2K_valid_HR``): the one
  whose name contains ``train`` (split ``train``) or ``val`` (split ``val``); a single ``*_HR``
  subfolder serves the train split. LR in ``<prefix>_LR_bicubic/X{s}``.
- a folder TREE of HR images (no images at its top, no ``HR``/``*_HR`` subfolder; e.g. T91/, BSDS200/):
  every image in its subfolders (hidden and ``LR_bicubic*`` folders skipped), named by its relative
  path without suffix (``T91/t1``); LR images are always generated. It has no val split.

An LR image for HR ``0001.png`` is ``0001x{s}.<ext>`` or ``0001.<ext>``; its size must be the HR
size // s (the HR image is cropped to a multiple of s). When no LR folder exists, LR images are
made with MATLAB bicubic (``nas.measure.imresize.downscale``) and cached per HR file in the user
cache, ``cache_dir()/lr`` (``SRNAS_HOME``, else ``~/.cache/srnas``), keyed by the file's absolute
path, size and modification time: nothing is ever written into the data folder, which may be
read-only. Every image is decoded and checked before anything is written, so bad input gives one
``DataError`` naming the file. Sets whose decoded size fits ``memory_bytes`` stay in memory; larger
ones are decoded again for each sample.
"""

from nas.data.cache import cache_dir
from nas.data.embedded import EMBEDDED, EMBEDDED_SPLITS, embedded_image
from nas.data.folders import resolve_folder
from nas.data.pairs import DEFAULT_MEMORY_BYTES, SCALES, SPLITS, Pair, PairedImages, center_crop, check_scale
from nas.data.patches import PatchBatches, dihedral
from nas.data.sources import has_split, open_pairs, validation_pairs

__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "EMBEDDED",
    "EMBEDDED_SPLITS",
    "SCALES",
    "SPLITS",
    "Pair",
    "PairedImages",
    "PatchBatches",
    "cache_dir",
    "center_crop",
    "check_scale",
    "dihedral",
    "embedded_image",
    "has_split",
    "open_pairs",
    "resolve_folder",
    "validation_pairs",
]
