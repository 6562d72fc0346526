"""Typed options of a search space's ``train:`` (supernet training) and ``search:`` (the study) sections.

Both are validated when the space is parsed (``nas.search.space.parse_space``), so a bad option fails before
a run folder is touched; the CLI applies its overrides with ``dataclasses.replace``, which validates again.
``config.yaml`` stores ``to_dict()`` of both (plain lists, as before).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from nas.data import EMBEDDED
from nas.device import check_device_name
from nas.errors import SpecError, SrnasError, UsageError
from nas.results.pareto import direction
from nas.train import TrainConfig

OBJECTIVES = ("psnr", "runtime_ms", "activations", "flops", "params")
SAMPLERS = ("nsga2", "random", "tpe", "nsga3", "qmc")
BACKENDS = ("optuna", "ray")
SAMPLINGS = ("uniform", "fair", "sandwich")
DISTILLS = ("none", "inplace")
RESUMABLE = ("trials", "backend", "workers", "ray_address", "storage", "device")  # may change on a restart


def _options(cls, data: Any, section: str):
    """``cls(**data)`` with unknown keys and bad values reported as SpecError naming the section."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{section!r} must be a mapping, got {data!r}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SpecError(f"unknown {section} option(s) {unknown}; allowed: {', '.join(sorted(names))}")
    try:
        return cls(**data)
    except (TypeError, ValueError, SrnasError) as exc:
        raise SpecError(f"{section}: {exc}") from exc


@dataclass
class SupernetTraining(TrainConfig):
    """The ``train:`` section: the shared loop's options plus the data and the path sampling.

    ``sampling: sandwich`` (BigNAS) trains per step the widest path, ``sandwich_paths`` fair-sampled paths and
    the narrowest path, gradients summed into one update; ``distill: inplace`` makes the non-widest paths of a
    sandwich step learn from the widest path's detached output (L1, weight ``distill_weight``; the HR loss
    keeps ``1 - distill_weight``).
    """

    data: str = EMBEDDED  # embedded, or a DIV2K-layout folder
    sampling: str = "fair"  # uniform | fair (FairNAS) | sandwich (BigNAS)
    sandwich_paths: int = 2  # sandwich: random paths between the widest and the narrowest
    distill: str = "none"  # none | inplace (sandwich only)
    distill_weight: float = 1.0  # inplace: weight of the teacher term; the HR loss gets the rest

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except SpecError:
            raise
        except SrnasError as exc:  # a bad value: UsageError from the command line, SpecError (via parse) from YAML
            raise UsageError(str(exc)) from exc
        self.data = str(self.data)
        if self.sampling not in SAMPLINGS:
            raise SpecError(f"unknown sampling {self.sampling!r}; known: {', '.join(SAMPLINGS)}")
        if self.distill not in DISTILLS:
            raise SpecError(f"unknown distill {self.distill!r}; known: {', '.join(DISTILLS)}")
        if self.distill != "none" and self.sampling != "sandwich":
            raise SpecError(f"distill: {self.distill} needs sampling: sandwich, got {self.sampling!r}")
        if isinstance(self.sandwich_paths, bool) or not isinstance(self.sandwich_paths, int) or self.sandwich_paths < 0:
            raise SpecError(f"sandwich_paths must be an integer >= 0, got {self.sandwich_paths!r}")
        if not 0.0 <= float(self.distill_weight) <= 1.0:
            raise SpecError(f"distill_weight must be in [0, 1], got {self.distill_weight!r}")
        self.distill_weight = float(self.distill_weight)

    @classmethod
    def parse(cls, data: Any) -> SupernetTraining:
        return _options(cls, data, "train")

    def loop_config(self, device: str) -> TrainConfig:
        """The plain ``TrainConfig`` of the supernet's training loop on ``device``."""
        names = {f.name for f in fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in asdict(self).items() if k in names and k != "device"}, device=device)

    def to_dict(self) -> dict[str, Any]:
        d = {**super().to_dict(), "data": self.data, "sampling": self.sampling}
        if self.sampling != "sandwich":  # the sandwich options only then: older fingerprints stay as they were
            for key in ("sandwich_paths", "distill", "distill_weight"):
                d.pop(key)
        return d


@dataclass(frozen=True)
class SearchOptions:
    """The ``search:`` section: everything a search run needs besides the space."""

    trials: int = 40
    sampler: str = "nsga2"
    population: int = 50  # NSGA-II/III generation size (its first generation is random)
    objectives: tuple[str, ...] = ("psnr", "runtime_ms")
    min_psnr: float | None = None  # constraint: PSNR >= this (dB)
    runtime_size: tuple[int, ...] = (3, 128, 128)
    runtime_repeats: int = 7
    val_max_size: int | None = 192
    device: str = "auto"
    seed: int = 0
    storage: str | None = None  # Optuna storage URL; default: journal file in the run folder
    backend: str = "optuna"  # optuna | ray
    workers: int = 1  # Ray: concurrent trials
    ray_address: str | None = None  # Ray: auto | HOST:PORT | None (start a local cluster)
    export_pareto: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "runtime_size", tuple(int(v) for v in self.runtime_size))
        if self.population < 2:
            raise SpecError(f"population must be >= 2, got {self.population}")
        if self.trials <= 0:
            raise SpecError(f"trials must be positive, got {self.trials}")
        if self.sampler not in SAMPLERS:
            raise SpecError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        objectives = self.objectives
        if not objectives or objectives[0] != "psnr" or len(set(objectives)) != len(objectives):
            raise SpecError(f"objectives must start with psnr and list each once, got {list(objectives)}")
        bad = [o for o in objectives if o not in OBJECTIVES]
        if bad:
            raise SpecError(f"unknown objective(s) {bad}; known: {', '.join(OBJECTIVES)}")
        if len(self.runtime_size) != 3 or min(self.runtime_size) <= 0:
            raise SpecError(f"runtime_size must be [C, H, W] of positive sizes, got {list(self.runtime_size)}")
        if self.runtime_repeats <= 0 or self.workers <= 0:
            raise SpecError(f"runtime_repeats and workers must be positive, got {self.runtime_repeats}, {self.workers}")
        if self.backend not in BACKENDS:
            raise SpecError(f"unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        if self.min_psnr is not None and not math.isfinite(self.min_psnr):
            raise SpecError(f"min_psnr must be a finite number of dB, got {self.min_psnr}")
        try:
            check_device_name(self.device)
        except UsageError as exc:
            raise SpecError(str(exc)) from exc
        if self.storage is not None:
            check_storage_url(self.storage)

    @classmethod
    def parse(cls, data: Any) -> SearchOptions:
        return _options(cls, data, "search")

    def with_overrides(self, **overrides: Any) -> SearchOptions:
        """A copy with the given options (``None`` values ignored), validated again; a bad value is a
        UsageError naming the command-line option (``--min-psnr nan: ...``)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        for key, value in given.items():
            try:
                replace(self, **{key: value})
            except SpecError as exc:
                shown = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
                raise UsageError(f"--{key.replace('_', '-')} {shown}: {exc}") from exc
        return replace(self, **given)

    @property
    def directions(self) -> dict[str, str]:
        """Each objective's direction, ``max`` or ``min`` (``nas.results.pareto.direction``)."""
        return {o: direction(o) for o in self.objectives}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(objectives=list(self.objectives), runtime_size=list(self.runtime_size))
        return d

    def fingerprint(self) -> dict[str, Any]:
        """The options a restart must not change."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE}


def check_storage_url(url: str) -> None:
    """An Optuna storage URL must be a SQLAlchemy URL of a known dialect (``sqlite:///f.db``,
    ``postgresql://...``, ``mysql://...``): checked before a search starts, without connecting."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise SpecError(
            f"storage {url!r} is not a database URL Optuna can use (sqlite:///FILE, postgresql://..., mysql://...)"
        ) from exc
