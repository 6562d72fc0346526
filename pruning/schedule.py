"""The pruning schedule: score -> prune a step -> fine-tune -> ... until the target is met -> shrink -> final fine-tune.

``prune(model, spec, cfg, output_dir, train_data=..., val_data=...)`` prunes an SRNet to ``cfg.target`` (a fraction
of the original's activations, params, FLOPs or measured runtime) in ``cfg.rounds`` rounds:

1. **score** the live gate entries: ``taylor`` (Gate Decorator |g * dL/dg| summed over ``score_batches`` patch
   batches; L is the L1 loss to the ground-truth HR, because the distillation loss of the unpruned model is 0
   and so is its gradient) or ``l1`` (weights, no data); divide by what pruning each entry alone saves of
   ``cfg.cost`` (``pruning.importance.unit_costs``; default: the target metric, ``latency`` for runtime);
2. **prune** the globally lowest-ranked entries: the shortest prefix of the ranking whose removal brings the
   target metric down to the round's goal (goals go linearly from the original to the target over the rounds),
   computed exactly by the cost model (no shrinking). Entries that save nothing of the cost metric are never
   pruned; a conv that would lose all its inputs or outputs keeps its best-ranked channel(s). With
   ``round_to=N`` entries are taken in chunks so every pruned width is a multiple of N: per channel space in
   coupled mode, per conv output in fine mode (where input gates are then left alone, so input widths are sums
   of rounded widths); widths never pruned keep their original size;
3. **fine-tune** ``round_steps`` steps with the shared train loop (``nas.train``, resumable in
   ``DIR/round_<k>/``), gates frozen, distilling from the unpruned model: target =
   ``(1 - gt_weight) * teacher(lr) + gt_weight * hr``.

Then the gated model is shrunk to real smaller convs and fine-tuned ``final_steps`` more steps the same way
(``DIR/final/``); ``DIR`` receives ``spec.yaml`` + ``weights.safetensors`` (a MODEL for every command) and the
report (``pruning.report``).

``runtime`` targets are *measured*: after each round's pruning the candidate is shrunk and timed together
with the unpruned model (``pruning.report.measure_runtimes``: medians of ``repeats`` interleaved passes at
``input_size`` on the training device); the target is met when their ratio is. A round's step is chosen on the
latency proxy (``flops + 64 * activations``, ``pruning.importance``) calibrated to the measured ratios so far by
a least-squares line (the smallest reachable model is measured first, which also tells whether the target is
reachable). Rounds continue past ``rounds`` (up to twice as many, each aiming 2% lower) until the measured
ratio meets the target.

Resuming: ``DIR/state.json`` (written atomically) records the configuration, the baseline, and every round's
masks (plain data: kept entries per gate) as soon as they are chosen, then its results once its fine-tune is
done. Calling ``prune`` again with the same configuration on the same folder continues: finished rounds are
restored (masks + the weights of their train checkpoint), an unfinished fine-tune resumes from its own
checkpoint, and the result equals that of an uninterrupted run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.data import Pair, PairedImages, PatchBatches
from nas.errors import SrnasError
from nas.io import atomic_json
from nas.models.pruned import decode_indices, encode_indices
from nas.models.spec import normalize_spec
from nas.train import CHECKPOINT_FILE, TrainConfig, TrainResult, evaluate, l1_loss, resolve_device, train
from nas.zoo.resolve import save_model
from pruning.gates import MODES, GatedModel
from pruning.importance import TaylorImportance, cost_model, l1_importance, normalized
from pruning.report import REPORT_JSON, benchmark_folders, make_report, measure_runtimes, write_report
from pruning.shrink import _layout, empty_convs, shrink

TARGETS = ("activations", "params", "flops", "runtime")
IMPORTANCES = ("taylor", "l1")
COSTS = ("activations", "flops", "params", "latency")  # what importance is normalised by
STATE_FILE = "state.json"
RUNTIME_MARGIN = 0.02  # runtime targets: how much lower each round past the plan aims
FORMAT = "srnas-prune"
# fields that may change when a run is continued (they do not change the result)
_RESUMABLE = {"progress", "device", "report", "benchmarks"}


@dataclass
class PruneConfig:
    """Schedule options (see the module docstring). ``target``: the fraction of the original ``metric`` to keep.

    Defaults are sized for RFDN on a 2-core CPU (about 10 minutes): 3 rounds of 150 fine-tune steps, 1500 final
    steps, batch 8 of 32x32 LR patches, lr 5e-4 (cosine per stage), pure distillation. The learning rate is
    that of RFDN's own training, official checkpoints included: with the unpruned model as the target the
    weights are not pulled off their task, and a pruned RFDN recovers faster with it (measured, 400 steps after
    a one-shot 0.75-activations pruning: Set5 +1.63 dB at 1e-4, +2.07 dB at 5e-4, +2.13 dB at 1e-3, +1.96 dB at
    2e-3).
    """

    target: float
    metric: str = "activations"  # activations | params | flops | runtime
    mode: str = "coupled"  # coupled | fine (pruning.gates)
    importance: str = "taylor"  # taylor | l1
    cost: str | None = None  # normalisation: params | flops | activations | latency; None: the target's
    round_to: int = 1  # prune widths in multiples of this
    rounds: int = 3
    round_steps: int = 150
    final_steps: int = 1500
    score_batches: int = 16
    batch_size: int = 8
    patch_size: int = 32
    lr: float = 5e-4
    final_lr: float | None = None  # None: lr
    gt_weight: float = 0.0  # share of the ground truth in the fine-tune target (0: pure distillation)
    input_size: tuple[int, int, int] = (3, 256, 256)  # costs and runtime are counted at 1 x input_size
    device: str = "auto"
    repeats: int = 10  # timed passes per runtime measurement
    warmup: int = 3
    ckpt_every: int = 50
    seed: int = 0
    progress: bool = True
    report: bool = True  # time and evaluate the stages into report.json / report.md
    benchmarks: tuple[str, ...] = ("Set5", "Set14")  # reference-kit sets in the report (when present)

    def __post_init__(self) -> None:
        self.input_size = tuple(int(s) for s in self.input_size)  # type: ignore[assignment]
        self.benchmarks = tuple(self.benchmarks)
        check_target(self.metric, self.target)
        if self.mode not in MODES:
            raise SrnasError(f"unknown pruning mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.importance not in IMPORTANCES:
            raise SrnasError(f"unknown importance {self.importance!r}: expected one of {', '.join(IMPORTANCES)}")
        if self.cost is not None and self.cost not in COSTS:
            raise SrnasError(f"unknown cost metric {self.cost!r}: expected one of {', '.join(COSTS)}")
        for name in ("round_to", "rounds", "score_batches", "batch_size", "patch_size", "repeats", "ckpt_every"):
            if int(getattr(self, name)) < 1:
                raise SrnasError(f"pruning option {name} must be >= 1, got {getattr(self, name)}")
        for name in ("round_steps", "final_steps", "warmup"):
            if int(getattr(self, name)) < 0:
                raise SrnasError(f"pruning option {name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or (self.final_lr is not None and not self.final_lr > 0):
            raise SrnasError("learning rates must be > 0")
        if not 0.0 <= self.gt_weight <= 1.0:
            raise SrnasError(f"gt_weight must be in [0, 1], got {self.gt_weight}")
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise SrnasError(f"input_size must be three positive integers (C, H, W), got {self.input_size}")

    @property
    def cost_metric(self) -> str:
        return self.cost or ("latency" if self.metric == "runtime" else self.metric)

    @property
    def proxy_metric(self) -> str:
        """What the rounds select on: the target metric, or the latency proxy for runtime."""
        return "latency" if self.metric == "runtime" else self.metric

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["benchmarks"] = list(self.benchmarks)
        return d


def check_target(metric: str, fraction: float) -> None:
    """A target is a fraction of the original in (0, 1) of one of ``TARGETS``."""
    if metric not in TARGETS:
        raise SrnasError(f"unknown pruning target {metric!r}: expected one of {', '.join(TARGETS)}")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction < 1.0:
        raise SrnasError(
            f"target {metric} must be a fraction of the original model in (0, 1), e.g. 0.75; got {fraction!r}"
        )


def parse_target(**fractions: float | None) -> tuple[str, float]:
    """``(metric, fraction)`` from keyword options of which exactly one is set (the CLI's ``--target-*``)."""
    given = {k: v for k, v in fractions.items() if v is not None}
    if len(given) != 1:
        names = ", ".join(f"--target-{t}" for t in TARGETS)
        got = f"got {', '.join(f'--target-{k}' for k in given)}" if given else "got none"
        raise SrnasError(f"give exactly one pruning target ({names}); {got}")
    metric, fraction = next(iter(given.items()))
    check_target(metric, fraction)
    return metric, float(fraction)


@dataclass
class PruneResult:
    output_dir: str
    model: nn.Module  # the pruned, fine-tuned model (no gates)
    spec: dict[str, Any]
    rounds: list[dict[str, Any]]
    report: dict[str, Any] | None
    resumed: bool  # continued a previous run
    stopped: bool  # on_round asked to stop before the end
    seconds: float
    final: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- state


def _fingerprint(model: nn.Module, spec: dict[str, Any]) -> str:
    """A short hash of the spec and the weights, so a folder is never continued with another model."""
    h = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_state(path: Path, cfg: PruneConfig, fingerprint: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SrnasError(f"cannot read pruning state {path}: {exc}; use a new output folder") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SrnasError(f"{path} is not an srnas pruning state; use a new output folder")
    if state.get("fingerprint") != fingerprint:
        raise SrnasError(f"{path} belongs to a pruning run of another model or other weights; use a new output folder")
    old, new = state["config"], cfg.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k not in _RESUMABLE and old.get(k) != new.get(k))
    if diff:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise SrnasError(f"{path} was written with other pruning settings ({details}); use a new output folder")
    return state


def masks_to_data(gated: GatedModel) -> dict[str, str]:
    """Per gate: the kept entries as an index range string (``nas.models.pruned.encode_indices``)."""
    return {name: encode_indices(np.flatnonzero(keep.cpu().numpy())) for name, keep in gated.masks().items()}


def masks_from_data(gated: GatedModel, data: dict[str, str]) -> None:
    if set(data) != set(gated.gates):
        raise SrnasError("the saved masks do not match the model's gates; use a new output folder")
    masks = {}
    for name, text in data.items():
        keep = np.zeros(gated.gates[name].size, dtype=bool)
        keep[decode_indices(text, f"masks.{name}", len(keep))] = True
        masks[name] = torch.from_numpy(keep)
    gated.set_masks(masks)


# ----------------------------------------------------------------------------- ranking and selection


@dataclass(eq=False)
class _Chunk:
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

    def chunks(self, scores: np.ndarray) -> list[_Chunk]:
        """Candidate chunks in pruning order (lowest cost-normalised importance first)."""
        live = self.gated.live_entries().numpy()
        costs = self.cm.unit_costs(self.cfg.cost_metric).numpy()  # what each entry alone saves now
        cand = live & (costs > 0)
        key = normalized(torch.from_numpy(scores), torch.from_numpy(costs)).numpy()
        if self._groups is None:
            idx = np.flatnonzero(cand)
            order = idx[np.lexsort((idx, scores[idx], key[idx]))]
            return [_Chunk(np.array([e]), float(key[e])) for e in order]
        n = self.cfg.round_to
        chunks: list[_Chunk] = []
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
                    chunks.append(_Chunk(part, best, gi, per_group.get(gi, 0)))
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
            _, alive, layouts = _layout(gated)
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


def taylor_scores(
    gated: GatedModel, data: PairedImages, batches: int, batch_size: int, patch_size: int, seed: int
) -> np.ndarray:
    """Gate Decorator scores over ``batches`` patch batches (ground-truth L1 loss, eval mode, weights untouched)."""
    device = gated.gate_values.device
    taylor = TaylorImportance(gated)
    params = list(gated.model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = gated.training
    gated.eval()
    for p in params:
        p.requires_grad_(False)
    gated.gate_values.requires_grad_(True)
    try:
        for _, lr, hr in PatchBatches(data, batch_size, patch_size, seed).iterate(0, batches):
            gated.gate_values.grad = None
            l1_loss(gated(lr.to(device)), hr.to(device)).backward()
            taylor.accumulate()
    finally:
        gated.gate_values.requires_grad_(False)
        gated.gate_values.grad = None
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        gated.train(was_training)
    return taylor.scores().numpy()


def _scores(gated: GatedModel, cfg: PruneConfig, data: PairedImages, round_index: int) -> np.ndarray:
    if cfg.importance == "l1":
        return l1_importance(gated).numpy()
    seed = cfg.seed + 7919 * round_index  # a patch stream the fine-tunes (seed + k) do not use
    return taylor_scores(gated, data, cfg.score_batches, cfg.batch_size, cfg.patch_size, seed)


def _runtime(gated: GatedModel, teacher: nn.Module, cfg: PruneConfig, device: torch.device) -> dict[str, float]:
    """Median runtimes (ms) of the model ``shrink(gated)`` would return and of the unpruned model, timed in turn
    in one run (so load on a shared machine hits both alike), and their ratio."""
    small, _ = shrink(gated)
    times = measure_runtimes(
        {"base": teacher, "small": small}, cfg.input_size, device=str(device), repeats=cfg.repeats, warmup=cfg.warmup
    )
    small_ms, base_ms = times["small"], times["base"]
    return {"runtime_ms": small_ms, "baseline_runtime_ms": base_ms, "fraction": small_ms / base_ms}


def _proxy_goal(points: list[list[float]], fraction: float) -> float:
    """The latency-proxy value whose calibrated runtime fraction is ``fraction``: a least-squares line through
    the measured (proxy, runtime fraction) points; proportional to the first point when the line does not rise."""
    p = np.array(points, dtype=np.float64)
    if len(p) >= 2 and np.ptp(p[:, 0]) > 0:
        slope, intercept = np.polyfit(p[:, 0], p[:, 1], 1)
        if slope > 0:
            return float((fraction - intercept) / slope)
    return float(p[0, 0] * fraction / p[0, 1])


# ----------------------------------------------------------------------------- the schedule


def _train_cfg(cfg: PruneConfig, steps: int, lr: float, seed: int) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=cfg.batch_size,
        patch_size=cfg.patch_size,
        lr=lr,
        schedule="cosine",
        eta_min=lr * 0.01,
        ckpt_every=min(cfg.ckpt_every, steps),
        log_every=min(10, steps),
        seed=seed,
        device=cfg.device,
        progress=cfg.progress,
    )


def _fine_tune(
    model: nn.Module,
    cfg: PruneConfig,
    folder: Path,
    steps: int,
    lr: float,
    seed: int,
    data: PairedImages,
    val_data: Sequence[Pair] | None,
    teacher: nn.Module,
) -> TrainResult:
    teacher_weight = 1.0 - cfg.gt_weight
    return train(
        model,
        data,
        _train_cfg(cfg, steps, lr, seed),
        folder,
        val_data=val_data,
        teacher=teacher if teacher_weight > 0 else None,
        teacher_weight=teacher_weight,
    )


def prune(
    model: nn.Module,
    spec: dict[str, Any] | None,
    cfg: PruneConfig,
    output_dir: str | Path,
    *,
    train_data: PairedImages,
    val_data: Sequence[Pair] | None = None,
    source: str | None = None,
    on_round: Callable[[int, dict[str, Any]], bool | None] | None = None,
) -> PruneResult:
    """Prune ``model`` (an SRNet with weights; ``spec``, when given, must be its spec) into ``output_dir``.

    ``model`` is changed in place (gated, fine-tuned); the result holds the new, smaller model.

    ``on_round(k, record)`` runs after round ``k`` is finished and saved; returning True stops there (the
    same call later continues). Raises ``SrnasError`` for a target the pruner cannot reach, naming the
    smallest fraction it can.
    """
    start = time.time()
    own = getattr(model, "spec", None)
    if not isinstance(own, dict) or (spec is not None and normalize_spec(spec) != own):
        raise SrnasError(
            "prune needs an SRNet built from its spec (nas.models.network.build / nas.zoo.resolve.load_model)"
        )
    spec = own
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model = model.to(device)
    state_path = out / STATE_FILE
    fingerprint = _fingerprint(model, spec)
    state = _load_state(state_path, cfg, fingerprint)
    resumed = state is not None
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    gated = GatedModel(model, cfg.mode)
    gated.gate_values.requires_grad_(False)
    selector = Selector(gated, cfg)
    nz_full = selector.nonzero()
    base_cost = selector.cost(nz_full)
    counts0 = selector.cm.counts(nz_full)

    def save() -> None:
        atomic_json(state_path, state, indent=1)

    if state is None:
        state = {
            "format": FORMAT,
            "version": 1,
            "fingerprint": fingerprint,
            "source": source,
            "config": cfg.to_dict(),
            "baseline": {k: float(v) for k, v in counts0.items()},
            "rounds": [],
            "final": None,
        }
    minimum = _minimum(gated, selector, cfg, state, teacher, device)
    state["config"] = cfg.to_dict()  # resumable fields may have changed
    save()

    # -------------------------------------------------------------- rounds
    rounds: list[dict[str, Any]] = state["rounds"]
    done = [r for r in rounds if r["done"]]
    if done:
        _restore(gated, out, done[-1], cfg)
    stopped = False
    k = len(done)
    while not _target_met(state, cfg, minimum):
        k += 1
        if k > 2 * cfg.rounds:
            last = rounds[-1]
            raise SrnasError(
                f"runtime target {cfg.target} not met after {k - 1} rounds: the last candidate measured "
                f"{last['runtime_ms']:.2f} ms ({last['fraction']:.3f} of the original); the timing may be too noisy "
                "on this device: use more --repeats, a larger target, or an activations/FLOPs target"
            )
        round_start = time.time()
        if len(rounds) >= k:  # chosen before an interruption: reuse exactly
            record = rounds[k - 1]
            masks_from_data(gated, record["masks"])
        else:
            record = _prune_round(gated, selector, cfg, state, k, train_data, val_data, base_cost, teacher, device)
            rounds.append(record)
            save()
            _say(
                cfg,
                f"round {k}: pruned {record['pruned_entries']} gate entries: {cfg.metric} "
                f"{record['fraction']:.4f} of the original (goal {record['goal_fraction']:.4f})"
                + (f", val PSNR-Y {record['val_psnr_pruned']:.3f} dB" if "val_psnr_pruned" in record else ""),
            )
        if cfg.round_steps > 0:
            result = _fine_tune(
                gated, cfg, out / f"round_{k}", cfg.round_steps, cfg.lr, cfg.seed + k, train_data, val_data, teacher
            )
            record["val_psnr"] = result.final_psnr
        record["done"] = True
        record["seconds"] = round(record.get("seconds", 0.0) + time.time() - round_start, 2)
        save()
        if on_round is not None and on_round(k, record):
            stopped = True
            break
    if stopped:
        gated.remove()
        return PruneResult(str(out), model, spec, rounds, None, resumed, True, round(time.time() - start, 2))

    # -------------------------------------------------------------- shrink + final fine-tune
    final_masks = masks_to_data(gated)
    small, small_spec = shrink(gated)
    gated.remove()
    final = state["final"] or {"done": False}
    final_start = time.time()
    if not final["done"]:
        if cfg.final_steps > 0:
            result = _fine_tune(
                small,
                cfg,
                out / "final",
                cfg.final_steps,
                cfg.final_lr or cfg.lr,
                cfg.seed + 1000,
                train_data,
                val_data,
                teacher,
            )
            final["val_psnr"] = result.final_psnr
        save_model(out, small.cpu(), small_spec)
        final.update(done=True, seconds=round(time.time() - final_start, 2))
        state["final"] = final
        save()
    else:
        from nas.zoo.resolve import load_model

        small = load_model(out).model

    report = None
    made = state.get("report") or {}
    if cfg.report and made.get("benchmarks") == list(cfg.benchmarks) and (out / REPORT_JSON).is_file():
        report = json.loads((out / REPORT_JSON).read_text())
    elif cfg.report:
        _say(cfg, "report: timing and evaluating the unpruned, pruned and fine-tuned models")
        report_start = time.time()
        report = _report(teacher, small, final_masks, state, cfg, minimum, device, val_data, source)
        write_report(out, report)
        state["report"] = {"seconds": round(time.time() - report_start, 2), "benchmarks": list(cfg.benchmarks)}
        save()
    return PruneResult(
        str(out), small.cpu(), small_spec, rounds, report, resumed, False, round(time.time() - start, 2), final
    )


def _say(cfg: PruneConfig, text: str) -> None:
    if cfg.progress:
        print(text, file=sys.stderr, flush=True)


def _target_met(state: dict[str, Any], cfg: PruneConfig, minimum: dict[str, Any]) -> bool:
    rounds = [r for r in state["rounds"] if r["done"]]
    if not rounds:
        return False
    return rounds[-1]["fraction"] <= cfg.target + 1e-12


def _minimum(
    gated: GatedModel,
    selector: Selector,
    cfg: PruneConfig,
    state: dict[str, Any],
    teacher: nn.Module,
    device: torch.device,
) -> dict[str, Any]:
    """The smallest model the schedule can reach (everything rankable pruned); unreachable targets fail here."""
    saved = gated.gate_mask.clone()
    nz = selector.select(l1_importance(gated).numpy(), -math.inf)
    counts = selector.cm.counts(nz)
    base = state["baseline"]
    minimum: dict[str, Any] = {"fraction": {k: counts[k] / base[k] for k in ("params", "flops", "activations")}}
    if cfg.metric == "runtime":
        if "minimum_runtime" not in state:
            with torch.no_grad():
                gated.gate_mask.copy_(torch.from_numpy(nz))
            state["minimum_runtime"] = _runtime(gated, teacher, cfg, device)
            # (latency proxy, measured runtime fraction) points the rounds calibrate the proxy on
            state["calibration"] = [
                [selector.cost(np.ones_like(nz)), 1.0],
                [selector.cost(nz), state["minimum_runtime"]["fraction"]],
            ]
        minimum["fraction"]["runtime"] = state["minimum_runtime"]["fraction"]
    with torch.no_grad():
        gated.gate_mask.copy_(saved)
    reach = minimum["fraction"][cfg.metric]
    if cfg.target < reach:
        what = "measured runtime" if cfg.metric == "runtime" else cfg.metric
        raise SrnasError(
            f"target {cfg.metric} {cfg.target} is unreachable in {cfg.mode} mode"
            f"{f' with widths rounded to {cfg.round_to}' if cfg.round_to > 1 else ''}: removing every prunable "
            f"channel leaves {reach:.4f} of the original {what} (the reachable minimum); choose a target >= "
            f"{math.ceil(reach * 1000) / 1000:.3f}" + ("" if cfg.mode == "coupled" else " or coupled mode")
        )
    return minimum


def _prune_round(
    gated: GatedModel,
    selector: Selector,
    cfg: PruneConfig,
    state: dict[str, Any],
    k: int,
    data: PairedImages,
    val_data: Sequence[Pair] | None,
    base_cost: float,
    teacher: nn.Module,
    device: torch.device,
) -> dict[str, Any]:
    t0 = time.time()
    step = min(k, cfg.rounds) / cfg.rounds
    goal_fraction = 1.0 - (1.0 - cfg.target) * step
    if cfg.metric == "runtime":
        extra = max(0, k - cfg.rounds)  # rounds past the plan aim 2% lower each and take >= 2% steps
        goal_fraction -= RUNTIME_MARGIN * extra
        goal = _proxy_goal(state["calibration"], goal_fraction)
        current = selector.cost(selector.nonzero())
        goal = min(goal, current * (1.0 - RUNTIME_MARGIN * max(1, extra)))
    else:
        goal = goal_fraction * base_cost
    scores = _scores(gated, cfg, data, k)
    nz = selector.select(scores, goal)
    if cfg.metric != "runtime" and selector.cost(nz) > goal * (1 + 1e-9):
        raise SrnasError(
            f"round {k} cannot bring the {cfg.metric} to {goal_fraction:.4f} of the original: with this ranking the "
            f"smallest model keeps {selector.cost(nz) / base_cost:.4f}; choose a larger target"
        )
    with torch.no_grad():
        gated.gate_mask.copy_(torch.from_numpy(nz) & gated.gate_mask.cpu())
    counts = selector.cm.counts(nz)
    record: dict[str, Any] = {
        "round": k,
        "goal_fraction": goal_fraction,
        "fraction": selector.cost(nz) / base_cost if cfg.metric != "runtime" else None,
        "counts": {key: float(v) for key, v in counts.items()},
        "pruned_entries": int((~nz).sum()),
        "masks": masks_to_data(gated),
        "done": False,
    }
    if cfg.metric == "runtime":
        record.update(_runtime(gated, teacher, cfg, device))
        state["calibration"].append([selector.cost(nz), record["fraction"]])
    if val_data:
        record["val_psnr_pruned"] = evaluate(gated, val_data, data.scale, device)
    record["seconds"] = round(time.time() - t0, 2)
    return record


def _restore(gated: GatedModel, out: Path, record: dict[str, Any], cfg: PruneConfig) -> None:
    """Masks and weights at the end of a finished round."""
    masks_from_data(gated, record["masks"])
    if cfg.round_steps == 0:
        return  # nothing was trained: the weights are the original ones
    path = out / f"round_{record['round']}" / CHECKPOINT_FILE
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        gated.load_state_dict(ckpt["model"])
    except Exception as exc:  # a missing or damaged file: name it
        raise SrnasError(f"cannot restore round {record['round']} from {path}: {exc}") from exc


def _report(
    teacher: nn.Module,
    small: nn.Module,
    masks: dict[str, str],
    state: dict[str, Any],
    cfg: PruneConfig,
    minimum: dict[str, Any],
    device: torch.device,
    val_data: Sequence[Pair] | None,
    source: str | None,
) -> dict[str, Any]:
    """Before / after pruning (final masks on the original weights) / after fine-tuning; plus the other mode's
    architecture at the same target (one-shot, L1-ranked: architecture only) timed in the same run."""
    teacher = teacher.to(device)
    spec = teacher.spec
    # after pruning, before any fine-tuning: the final masks on the original weights
    gated = GatedModel(copy.deepcopy(teacher), cfg.mode)
    masks_from_data(gated, masks)
    pruned, _ = shrink(gated)
    gated.remove()
    extra: dict[str, nn.Module] = {}
    notes = []
    other = "fine" if cfg.mode == "coupled" else "coupled"
    achieved = state["rounds"][-1]["counts"][cfg.proxy_metric] / state["baseline"][cfg.proxy_metric]
    try:
        other_gated = GatedModel(copy.deepcopy(teacher), other)
        other_cfg = PruneConfig(**{**cfg.to_dict(), "mode": other, "importance": "l1", "target": 0.5})
        sel = Selector(other_gated, other_cfg)
        nz = sel.select(l1_importance(other_gated).numpy(), achieved * sel.cost(sel.nonzero()))
        reached = sel.cost(nz) / sel.cost(sel.nonzero())
        if reached <= achieved * 1.001:
            with torch.no_grad():
                other_gated.gate_mask.copy_(torch.from_numpy(nz))
            extra[f"{other} mode, same {cfg.proxy_metric}"] = shrink(other_gated)[0]
        else:
            notes.append(f"{other} mode cannot reach {achieved:.3f} of the {cfg.proxy_metric} (minimum {reached:.3f})")
        other_gated.remove()
    except SrnasError as exc:
        notes.append(f"{other} mode comparison skipped: {exc}")
    stages = {"before": teacher, "after pruning": pruned, "after fine-tuning": small.to(device)}
    rounds = [{k: v for k, v in r.items() if k != "masks"} for r in state["rounds"]]
    info = {
        "model": source or spec.get("name", "model"),
        "mode": cfg.mode,
        "target": {cfg.metric: cfg.target},
        "importance": cfg.importance,
        "cost": cfg.cost_metric,
        "reachable_minimum": minimum["fraction"],
        "rounds": rounds,
        "final": state.get("final"),
        "config": cfg.to_dict(),
    }
    report = make_report(
        stages,
        scale=spec["scale"],
        input_size=cfg.input_size,
        device=str(device),
        val_pairs=val_data,
        benchmarks=benchmark_folders(cfg.benchmarks, spec["scale"]),
        same_architecture={"after fine-tuning": "after pruning"},
        extra_runtime=extra,
        repeats=cfg.repeats,
        warmup=cfg.warmup,
        info=info,
    )
    if extra:
        ((name, row),) = report["runtime_extra"].items()
        mine = report["stages"][-1]["runtime_ms"]
        faster = cfg.mode if mine <= row["runtime_ms"] else other
        report["mode_comparison"] = (
            f"{faster} mode ran faster on {device}: {cfg.mode} (this run) {mine:.2f} ms, {other} "
            f"{row['runtime_ms']:.2f} ms (a one-shot L1-ranked {other} pruning to the same {cfg.proxy_metric}, "
            "timed in the same run; architecture only)"
        )
    report["notes"] = notes
    return report
