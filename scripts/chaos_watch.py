"""What the chaos benchmark needs around a command: start it tagged, read its progress from the files it writes,
kill its whole process tree with SIGKILL, find processes it left behind, and check the files it left.

Every process a started command creates (Ray's included) inherits ``SRNAS_CHAOS_TAG=<tag>`` in its environment,
so what survives a kill is found in ``/proc`` even when it left the process group or was re-parented.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

TAG_ENV = "SRNAS_CHAOS_TAG"
PARSED = (".json", ".csv", ".yaml", ".yml", ".safetensors", ".journal", ".pt")
NOT_OURS = ("tune",)  # <run>/ray/tune: Ray Tune's own experiment files (srnas never reads them back)


# --------------------------------------------------------------------------- processes


def _proc_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _alive(pid: int) -> bool:
    """Running (not a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def tagged(tag: str) -> list[int]:
    """Live processes whose environment holds ``SRNAS_CHAOS_TAG=tag``."""
    marker = f"{TAG_ENV}={tag}".encode()
    found = []
    for pid in _proc_pids():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in env.split(b"\0") and _alive(pid):
            found.append(pid)
    return found


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from the parent pids in /proc)."""
    children: dict[int, list[int]] = {}
    for pid in _proc_pids():
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _sigkill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def start(argv: list[str], cwd: Path, log: Path, tag: str) -> subprocess.Popen:
    """Start ``argv`` in its own session, output appended to ``log``, tagged for ``tagged``."""
    env = {**os.environ, "SRNAS_PROGRESS": "plain", "OMP_NUM_THREADS": "1", TAG_ENV: tag}
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with log.open("a") as out:
        print(f"==== start {' '.join(argv[2:])}", file=out, flush=True)
        return subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill_tree(process: subprocess.Popen, tag: str) -> None:
    """SIGKILL the command's whole process tree at once: its group, its descendants, everything tagged."""
    pids = set(descendants(process.pid)) | set(tagged(tag))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    _sigkill(pids)
    process.wait()


def strays(tag: str, grace_s: float = 3.0) -> int:
    """Tagged processes still alive after ``grace_s`` (then killed, so they cannot disturb what follows)."""
    deadline = time.monotonic() + grace_s
    left = tagged(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = tagged(tag)
    _sigkill(left)
    return len(left)


# --------------------------------------------------------------------------- progress from files

_STEPS: dict[Path, tuple[int, int]] = {}  # checkpoint -> (mtime_ns, step)


def checkpoint_step(folder: Path) -> int:
    """The step of ``folder``'s training checkpoint (0 when none), or the last row of its ``train_log.csv``."""
    step = 0
    ckpt = folder / "checkpoint.pt"
    try:
        mtime = ckpt.stat().st_mtime_ns
        cached = _STEPS.get(ckpt)
        if cached is None or cached[0] != mtime:
            import torch

            state = torch.load(ckpt, map_location="cpu", weights_only=True).get("state", {})
            _STEPS[ckpt] = (mtime, int(state.get("step", 0)))
        step = _STEPS[ckpt][1]
    except (OSError, RuntimeError, EOFError, AttributeError, ValueError):
        pass
    try:
        lines = (folder / "train_log.csv").read_text().splitlines()
        step = max(step, int(lines[-1].split(",")[0])) if len(lines) > 1 else step
    except (OSError, ValueError, IndexError):
        pass
    return step


def complete_rows(path: Path) -> int:
    """COMPLETE rows of a trials table (0 when missing or half-written)."""
    try:
        header, *rows = path.read_text().splitlines()
        col = header.split(",").index("state")
    except (OSError, ValueError):
        return 0
    return sum(1 for r in rows if r.split(",")[col:col + 1] == ["COMPLETE"])  # fmt: skip


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- files left behind


def _ours(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return not any(a == "ray" and b in NOT_OURS for a, b in zip(parts, parts[1:], strict=False))


def _parse(path: Path) -> None:
    suffix = path.suffix
    if suffix == ".json":
        json.loads(path.read_text())
    elif suffix == ".csv":
        import pandas as pd

        if path.stat().st_size:
            pd.read_csv(path)
    elif suffix in (".yaml", ".yml"):
        import yaml

        yaml.safe_load(path.read_text())
    elif suffix == ".safetensors":
        from safetensors.torch import load_file

        load_file(path)
    elif suffix == ".journal":
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            raise ValueError("torn last record")
        for line in data.splitlines():
            json.loads(line)
    elif suffix == ".pt":
        import torch

        torch.load(path, map_location="cpu", weights_only=True)


def corrupt_files(root: Path) -> list[str]:
    """srnas files under ``root`` (json/csv/yaml/safetensors/journal/pt) that do not parse."""
    bad = []
    for path in sorted(root.rglob("*")):
        if path.suffix in PARSED and path.is_file() and not path.is_symlink() and _ours(path, root):
            try:
                _parse(path)
            except Exception as exc:  # any failure to read back is corruption
                bad.append(f"{path.relative_to(root)}: {type(exc).__name__}")
    return bad


def leftovers(root: Path) -> list[str]:
    """Temporary files and lock files (also dangling lock symlinks) anywhere under ``root``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            if name.endswith((".tmp", ".lock")) or ".tmp." in name:
                out.append(str((Path(dirpath) / name).relative_to(root)))
    return sorted(out)
