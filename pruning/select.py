"""Which gate entries to prune: rank the live entries by cost-normalised importance, then take the shortest
prefix of the ranking whose removal brings the proxy metric to the round's goal, exactly, on the cost model.

Entries that save nothing of the cost metric are never pruned; a conv that would lose all its inputs or outputs
keeps its best-ranked channel(s). With ``round_to=N`` entries are taken in chunks so every pruned width is a
multiple of N: per channel space in coupled mode, per conv output in fine mode (where input gates are then left
alone, so input widths are sums of rounded widths); widths never pruned keep their original size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nas.errors import SrnasError
from pruning.config import PruneConfig
from pruning.gates import GatedModel
from pruning.importance import cost_model, normalized
from pruning.shrink import empty_convs, layout


@dataclass(eq=False)
class Chunk:
    """Gate entries pruned together (one, or a run that keeps a width a multiple of ``round_to``)."""

    entries: np.ndarray
    key: float
    group: int = -1  # round_to: the gate the chunk belongs to (chunks of a gate go in order)
    index: int = 0


class Selector:
    """Chooses which gate entries to prune to bring a cost metric to a goal (see the module docstring)."""

    def __init__(self, gated: GatedModel, cfg: PruneConfig) -> None:
        self.gated = gated
        self.cfg = cfg
        self.cm = cost_model(gated, cfg.input_size)
        self._groups = self._round_groups() if cfg.round_to > 1 else None

    def cost(self, nz: np.ndarray, metric: str | None = None) -> float:
        return self.cm.cost(metric or self.cfg.proxy_metric, nz)

    def nonzero(self) -> np.ndarray:
        return (self.gated.effective() != 0).cpu().numpy()

    def _round_groups(self) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
        """Per rounded gate: (gate start, entries, channels per entry, channels without an entry)."""
        g = self.gated
        graph = g.graph
        groups = []
        for gate in g.gates.values():
            if gate.role == "in":
                continue
            if gate.role == "out":
                out_units = graph.convs[gate.module].out_units
                ch = np.array([(out_units == u).sum() for u in gate.units])
                fixed = len(out_units) - int(ch.sum())
            else:
                ch = graph.unit_channels[gate.units].astype(np.int64)
                space = graph.spaces[int(graph.unit_space[gate.units[0]])]
                fixed = int(graph.unit_channels[space.units].sum()) - int(ch.sum())
            groups.append((gate.start, np.arange(gate.start, gate.start + gate.size), ch, fixed))
        return groups

    def chunks(self, scores: np.ndarray) -> list[Chunk]:
        """Candidate chunks in pruning order (lowest cost-normalised importance first)."""
        live = self.gated.live_entries().numpy()
        costs = self.cm.unit_costs(self.cfg.cost_metric).numpy()  # what each entry alone saves now
        cand = live & (costs > 0)
        key = normalized(torch.from_numpy(scores), torch.from_numpy(costs)).numpy()
        if self._groups is None:
            idx = np.flatnonzero(cand)
            order = idx[np.lexsort((idx, scores[idx], key[idx]))]
            return [Chunk(np.array([e]), float(key[e])) for e in order]
        n = self.cfg.round_to
        chunks: list[Chunk] = []
        per_group: dict[int, int] = {}
        for gi, (_, entries, ch, fixed) in enumerate(self._groups):
            alive = live[entries]
            width = fixed + int(ch[alive].sum())
            sel = np.flatnonzero(cand[entries])
            sel = sel[np.lexsort((sel, scores[entries][sel], key[entries][sel]))]
            left = int(alive.sum())
            run: list[int] = []
            best = -math.inf
            for i in sel:
                run.append(i)
                width -= int(ch[i])
                left -= 1
                if left < 1:
                    break
                if width % n == 0:
                    part = entries[run]
                    k = float(scores[part].sum() / max(costs[part].sum(), 1e-30))
                    best = max(best, k)  # chunks of a gate stay in order
                    chunks.append(Chunk(part, best, gi, per_group.get(gi, 0)))
                    per_group[gi] = per_group.get(gi, 0) + 1
                    run = []
        chunks.sort(key=lambda c: (c.key, c.group, c.index))
        return chunks

    def select(self, scores: np.ndarray, goal: float) -> np.ndarray:
        """The nonzero pattern after pruning the shortest prefix of ``chunks(scores)`` that brings the proxy
        metric to ``goal`` or below (all of them when it cannot), keeping every conv non-empty."""
        nz0 = self.nonzero()
        chunks = self.chunks(scores)
        cut: dict[int, int] = {}  # group -> first chunk index that may no longer be pruned
        banned: set[int] = set()
        unit = self.gated.entry_unit
        for _ in range(len(chunks) + 1):
            active = [
                i
                for i, c in enumerate(chunks)
                if i not in banned and (c.group < 0 or c.index < cut.get(c.group, 1 << 30))
            ]
            bounds = np.cumsum([0, *(len(chunks[i].entries) for i in active)])
            order = np.concatenate([chunks[i].entries for i in active]) if active else np.zeros(0, np.int64)
            hi, nz = self._shortest_prefix(nz0, order, bounds, goal)
            bad = self._empty_sides(nz)
            if not bad:
                return nz
            # each emptied side of a conv keeps the best-ranked pruned chunk that touches its channels
            by_unit: dict[int, list[int]] = {}
            for i in active[:hi]:
                for u in set(unit[chunks[i].entries].tolist()):
                    by_unit.setdefault(u, []).append(i)
            fresh: set[int] = set()
            for units in bad.values():
                touching = {i for u in set(units.tolist()) for i in by_unit.get(u, ())}
                if not touching or touching & fresh:  # nothing to keep, or kept already in this pass
                    continue
                i = max(touching - banned, key=lambda j: (chunks[j].key, j))
                fresh.add(i)
                if chunks[i].group >= 0:
                    cut[chunks[i].group] = min(cut.get(chunks[i].group, 1 << 30), chunks[i].index)
            banned |= fresh
            if not fresh:
                raise SrnasError(f"cannot prune without emptying conv(s) {', '.join(list(bad)[:4])}")
        raise SrnasError("pruning selection did not converge")  # pragma: no cover - each pass bans a chunk

    def _shortest_prefix(
        self, nz0: np.ndarray, order: np.ndarray, bounds: np.ndarray, goal: float
    ) -> tuple[int, np.ndarray]:
        """Binary search of the fewest chunks (``order[:bounds[k]]``) to prune to reach ``goal`` (all: ``k`` max)."""

        def pruned(k: int) -> np.ndarray:
            nz = nz0.copy()
            nz[order[: bounds[k]]] = False
            return nz

        lo, hi = 0, len(bounds) - 1
        if self.cost(pruned(hi)) <= goal:
            while lo < hi:
                mid = (lo + hi) // 2
                if self.cost(pruned(mid)) <= goal:
                    hi = mid
                else:
                    lo = mid + 1
        return hi, pruned(hi)

    def _empty_sides(self, nz: np.ndarray) -> dict[str, np.ndarray]:
        """``{"<conv>:in" / "<conv>:out": units}`` for every conv side the pattern ``nz`` would empty."""
        gated = self.gated
        saved = gated.gate_mask.clone()
        try:
            with torch.no_grad():
                gated.gate_mask.copy_(torch.from_numpy(nz) & saved.cpu().bool())
            if not empty_convs(gated):
                return {}
            _, alive, layouts = layout(gated)
        finally:
            with torch.no_grad():
                gated.gate_mask.copy_(saved)
        bad = {}
        for conv in gated.graph.convs.values():
            if conv.kind == "depthwise" and not alive[conv.out_units].any():
                bad[f"{conv.name}:out"] = conv.out_units
            elif conv.kind == "conv":
                for side in ("in", "out"):
                    if not layouts[conv.name][f"{side}_keep"].any():
                        bad[f"{conv.name}:{side}"] = getattr(conv, f"{side}_units")
        return bad
