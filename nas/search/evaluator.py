"""Score one architecture of a search space with inherited supernet weights: PSNR, measured runtime, counts.

The same ``Evaluator`` runs in the local Optuna loop and in every Ray worker. Results are cached on disk
per key (PSNR per spec, runtime per spec + device + input size), so repeated architectures cost nothing
and several processes share the cache safely (one file per key, written atomically).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.data import EMBEDDED, open_pairs, validation_pairs
from nas.errors import SrnasError
from nas.io import atomic_write
from nas.measure.counting import DEFAULT_INPUT_SIZE
from nas.measure.evaluate import mean_psnr
from nas.models.checkpoint import read_state_dict
from nas.search.options import SearchOptions
from nas.search.space import SearchSpace
from nas.search.supernet import Supernet, has_batchnorm, recalibrate_bn

BN_BATCHES = 8


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


class DiskCache:
    """A directory of small JSON files, one per key; safe for concurrent writers (atomic rename)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> dict | None:
        path = self.folder / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, value: dict) -> None:
        atomic_write(self.folder / f"{key}.json", json.dumps(value))


class Evaluator:
    """Evaluates choices of ``space`` with the supernet weights in ``weights`` (a safetensors/pt file)."""

    def __init__(
        self,
        space: SearchSpace,
        weights: str | Path,
        cache_dir: str | Path,
        *,
        data: str = EMBEDDED,
        device: str = "cpu",
        runtime_size: tuple[int, int, int] = (3, 128, 128),
        runtime_repeats: int = 7,
        val_max_size: int | None = 192,
        seed: int = 0,
    ) -> None:
        self.space = space
        self.device = torch.device(device)
        self.runtime_size = tuple(int(v) for v in runtime_size)
        self.runtime_repeats = runtime_repeats
        self.cache = DiskCache(Path(cache_dir))
        self.supernet = Supernet(space)
        self.supernet.load_state_dict(read_state_dict(weights), strict=True)
        self.supernet.to(self.device).eval()
        self.weights_id = _key(Path(weights).stat().st_size, Path(weights).stat().st_mtime_ns)
        self.val = validation_pairs(data, space.scale, max_size=val_max_size)
        self.train_data = open_pairs(data, space.scale, "train")
        self.seed = seed

    def _bn_batches(self):
        from nas.data import PatchBatches

        batches = PatchBatches(self.train_data, 16, 24, self.seed)
        for step in range(BN_BATCHES):
            yield batches[step][0].to(self.device)

    @torch.inference_mode()
    def _psnr(self, model: torch.nn.Module) -> float:
        return mean_psnr(model, self.val, self.space.scale, self.device, check_finite=True)

    def evaluate(self, choice: dict[str, Any]) -> dict[str, Any]:
        """Metrics of one architecture: psnr, runtime_ms, activations, params, FLOPs, #conv and timings."""
        from nas.measure.profiler import profile_model
        from nas.models.genotype import genotype

        spec = self.space.to_spec(choice)
        out: dict[str, Any] = {"spec": spec, "genotype": genotype(spec)}
        t0 = time.perf_counter()
        model = self.supernet.extract(choice)
        if has_batchnorm(model):
            with torch.no_grad():
                recalibrate_bn(model, self._bn_batches())
        model.eval()
        key = _key("psnr", spec, self.weights_id)
        cached = self.cache.get(key)
        if cached is None:
            cached = {"psnr": self._psnr(model)}
            self.cache.put(key, cached)
        out["psnr"] = cached["psnr"]
        if not math.isfinite(out["psnr"]):
            raise SrnasError(f"PSNR is {out['psnr']} (diverged weights?)")
        t1 = time.perf_counter()
        counts_key = _key("counts", spec)
        counts = self.cache.get(counts_key)
        if counts is None:
            prof = profile_model(model, DEFAULT_INPUT_SIZE, device="cpu")
            counts = {k: getattr(prof, k) for k in ("params", "flops", "flops_fvcore", "activations", "num_conv")}
            self.cache.put(counts_key, counts)
        out.update(counts)
        rt_key = _key(
            "runtime",
            spec,
            str(self.device),
            torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            self.runtime_size,
        )
        runtime = self.cache.get(rt_key)
        t2 = time.perf_counter()
        if runtime is None:
            prof = profile_model(
                model, self.runtime_size, device=str(self.device), runtime=True, repeats=self.runtime_repeats
            )
            runtime = {"runtime_ms": prof.runtime_ms}
            self.cache.put(rt_key, runtime)
        out.update(runtime)
        t3 = time.perf_counter()
        out.update(
            eval_s=round(t1 - t0, 4),
            count_s=round(t2 - t1, 4),
            runtime_measure_s=round(t3 - t2, 4),
            device=str(self.device),
            input_size="x".join(map(str, self.runtime_size)),
        )
        return out


@dataclass(frozen=True)
class EvalSetup:
    """How a run scores its trials: the one place its ``Evaluator`` is configured. Picklable with absolute
    paths, so Ray workers (which run in their own folders) build theirs from it."""

    space: SearchSpace
    weights: str
    cache_dir: str
    data: str
    device: str
    runtime_size: tuple[int, int, int]
    runtime_repeats: int
    val_max_size: int | None
    seed: int

    @classmethod
    def for_run(cls, space: SearchSpace, run_dir: Path, weights: Path, opts: SearchOptions, device: str) -> EvalSetup:
        data = space.train.data
        return cls(
            space=space,
            weights=str(Path(weights).resolve()),
            cache_dir=str((Path(run_dir) / "cache").resolve()),
            data=data if data == EMBEDDED else str(Path(data).resolve()),
            device=device,
            runtime_size=tuple(opts.runtime_size),  # type: ignore[arg-type]
            runtime_repeats=opts.runtime_repeats,
            val_max_size=opts.val_max_size,
            seed=opts.seed,
        )

    def build(self) -> Evaluator:
        return Evaluator(
            self.space,
            self.weights,
            self.cache_dir,
            data=self.data,
            device=self.device,
            runtime_size=self.runtime_size,
            runtime_repeats=self.runtime_repeats,
            val_max_size=self.val_max_size,
            seed=self.seed,
        )
