"""Union-find over channel nodes: every channel of every traced tensor is a node; unified nodes form a unit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Nodes:
    """Union-find over channel nodes with per-class flags.

    ``base[node]``: the tensor the node was created for (an index into ``bases``, their descriptions);
    ``image``/``shared``/``reasons`` are kept per class root (``reasons``: why the class is frozen).
    """

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.base: list[int] = []
        self.bases: list[str] = []
        self.image: dict[int, bool] = {}
        self.shared: dict[int, bool] = {}
        self.reasons: dict[int, list[str]] = {}

    def new(self, count: int, desc: str) -> np.ndarray:
        """``count`` fresh nodes (one per channel of a new tensor described by ``desc``)."""
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.base.extend([len(self.bases)] * count)
        self.bases.append(desc)
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: int, b: int, shared: bool = True) -> None:
        """Merge the classes of ``a`` and ``b``; ``shared``: the merge joins two producers (a residual add)."""
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra == rb:
            return
        self.parent[rb] = ra
        self.image[ra] = self.image.pop(ra, False) | self.image.pop(rb, False)
        self.shared[ra] = shared | self.shared.pop(ra, False) | self.shared.pop(rb, False)
        if rb in self.reasons:
            self.reasons.setdefault(ra, []).extend(self.reasons.pop(rb))

    def union_all(self, lists: Sequence[np.ndarray], shared: bool = True) -> None:
        """Unify the node lists position by position."""
        first = lists[0]
        for other in lists[1:]:
            for a, b in zip(first.tolist(), other.tolist(), strict=True):
                self.union(a, b, shared)

    def freeze(self, nodes: np.ndarray, reason: str) -> None:
        """Mark the classes of ``nodes`` never prunable, keeping up to 8 reasons each."""
        for n in nodes.tolist():
            r = self.find(n)
            lst = self.reasons.setdefault(r, [])
            if reason not in lst and len(lst) < 8:
                lst.append(reason)

    def mark_image(self, nodes: np.ndarray) -> None:
        for n in nodes.tolist():
            self.image[self.find(n)] = True
