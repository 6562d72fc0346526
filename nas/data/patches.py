"""Random aligned LR/HR patch batches for training; batch ``k`` depends only on the seed and ``k``."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

from nas.data.pairs import PairedImages
from nas.errors import DataError

_DIHEDRAL = 8


def dihedral(image: np.ndarray, t: int) -> np.ndarray:
    """The ``t``-th (0..7) of the 8 flips/rotations of an HxWxC image (0 is the identity)."""
    out = np.rot90(image, t % 4, axes=(0, 1))
    return out[:, ::-1] if t >= 4 else out


class PatchBatches(torch.utils.data.Dataset):
    """Random aligned patch batches; batch ``step`` depends only on (seed, step), so resuming is exact.

    ``self[step]`` is ``(lr, hr)``: float tensors in [0, 1], ``B x 3 x P x P`` and
    ``B x 3 x (P*s) x (P*s)``, each patch a random crop of a random image under a random
    flip/rotation. ``P`` is the LR patch size. Images smaller than ``P`` (a folder tree mixes sizes: T91
    has 78x78 images) are not sampled, with a warning naming them; when none is large enough it is a DataError.
    """

    def __init__(self, data: PairedImages, batch_size: int, patch_size: int, seed: int) -> None:
        if len(data) == 0:
            raise DataError(f"no training images in {data.source}")
        small = [(n, s) for n, s in zip(data.names, data.lr_shapes, strict=True) if min(s) < patch_size]
        if len(small) == len(data):
            name, (h, w) = small[0]
            raise DataError(f"LR image {name} in {data.source} is {w}x{h}, smaller than the LR patch size {patch_size}")
        if small:
            names = ", ".join(f"{n} ({s[1]}x{s[0]})" for n, s in small[:3]) + (", ..." if len(small) > 3 else "")
            warnings.warn(
                f"{len(small)} of {len(data)} LR images in {data.source} are smaller than the LR patch size "
                f"{patch_size} and are not sampled: {names}",
                stacklevel=2,
            )
        self.indices = [i for i, s in enumerate(data.lr_shapes) if min(s) >= patch_size]
        self.data, self.batch_size, self.patch_size, self.seed = data, batch_size, patch_size, seed

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        p, s = self.patch_size, self.data.scale
        lrs, hrs = [], []
        for _ in range(self.batch_size):
            pair = self.data.pair(self.indices[int(rng.integers(len(self.indices)))])
            h, w = pair.lr.shape[:2]
            y, x, t = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1)), int(rng.integers(_DIHEDRAL))
            lrs.append(dihedral(pair.lr[y : y + p, x : x + p], t))
            hrs.append(dihedral(pair.hr[y * s : (y + p) * s, x * s : (x + p) * s], t))
        return _batch_tensor(lrs), _batch_tensor(hrs)

    def iterate(
        self, start: int, stop: int, num_workers: int = 0, pin_memory: bool = False
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """``(step, lr, hr)`` for ``step`` in ``[start, stop)``, decoded in ``num_workers`` processes."""
        if num_workers <= 0:
            for step in range(start, stop):
                yield (step, *self[step])
            return
        loader = torch.utils.data.DataLoader(
            self, batch_size=None, sampler=range(start, stop), num_workers=num_workers, pin_memory=pin_memory
        )
        yield from ((step, lr, hr) for step, (lr, hr) in zip(range(start, stop), loader, strict=True))


def _batch_tensor(patches: list[np.ndarray]) -> torch.Tensor:
    arr = np.ascontiguousarray(np.stack(patches).transpose(0, 3, 1, 2))
    return torch.from_numpy(arr).float().div_(255.0)
