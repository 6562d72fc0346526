"""A two-node Ray cluster simulated on this machine: a head and a second node, each a separate `ray start`
process bound to 127.0.0.1 with one CPU, and `srnas search --backend ray --ray-address 127.0.0.1:PORT` with two
workers. Trials must run on both nodes (each trial records its node id) and measure what the local backend
measures for the same seed. Only loopback addresses are used."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray >= 2.5x enables token authentication for a new cluster (the head writes ~/.ray/auth_token when missing);
# every other process that joins it (the second node, `ray status`, the search's driver) must say so.
CLIENT_ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


def _ray() -> str:
    return shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def _ray_start(*args: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """One node in the foreground (``--block``): terminating the process stops that node and its workers."""
    argv = [_ray(), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    out = log.open("w")
    return subprocess.Popen([*argv, *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _alive_nodes(address: str) -> int:
    env = {**os.environ, **CLIENT_ENV}
    done = subprocess.run([_ray(), "status", "--address", address], capture_output=True, text=True, timeout=60, env=env)
    return done.stdout.count(" node_") if done.returncode == 0 else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a running head + one more node (2 CPUs in all)."""
    if ray.is_initialized():
        ray.shutdown()
    logs = tmp_path_factory.mktemp("ray-cluster")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head_env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"} | {"RAY_USAGE_STATS_ENABLED": "0"}
    head_args = ("--head", "--port", str(port), "--include-dashboard", "false")
    head = _ray_start(*head_args, log=logs / "head.log", env=head_env)
    nodes = [head]
    try:
        deadline = time.monotonic() + 120
        while _alive_nodes(address) < 1:
            assert head.poll() is None and time.monotonic() < deadline, (logs / "head.log").read_text()
            time.sleep(1)
        nodes.append(_ray_start("--address", address, log=logs / "node.log", env={**os.environ, **CLIENT_ENV}))
        while _alive_nodes(address) < 2:
            assert nodes[1].poll() is None and time.monotonic() < deadline, (logs / "node.log").read_text()
            time.sleep(1)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for process in reversed(nodes):
            _stop(process)


def _search(space: Path, results: Path, *args: str) -> None:
    argv = [sys.executable, "-m", "nas.cli", "search", str(space), "--results-dir", str(results), "--device", "cpu"]
    argv += ["--sampler", "random", "--seed", "3", "--trials", "6", *args]
    env = {**os.environ, **CLIENT_ENV, "SRNAS_PROGRESS": "off"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _complete(run_dir: Path) -> list:
    import optuna

    from nas.search.study import STUDY_NAME, storage_for

    study = optuna.load_study(study_name=STUDY_NAME, storage=storage_for(run_dir, None))
    return [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]


def test_trials_run_on_both_nodes_and_equal_the_local_backend(cluster, tmp_path, small_space_data):
    """`srnas search --backend ray --ray-address` on the two-node cluster vs the local backend, same seed. The
    random sampler's proposals do not depend on which results come back first, so two workers propose the same
    sequence as one local process."""
    small_space_data["search"] = {"runtime_size": [3, 24, 24], "runtime_repeats": 1, "val_max_size": 48}
    space = tmp_path / "small.yaml"
    space.write_text(yaml.safe_dump(small_space_data))
    _search(space, tmp_path / "local")
    _search(space, tmp_path / "ray", "--backend", "ray", "--ray-address", cluster, "--workers", "2")
    local, distributed = (_complete(tmp_path / name / "small") for name in ("local", "ray"))
    assert len(distributed) == 6

    def measured(trials: list) -> dict[str, tuple[float, int]]:
        return {t.user_attrs["choice"]: (t.user_attrs["psnr"], t.user_attrs["activations"]) for t in trials}

    assert measured(distributed).keys() == measured(local).keys()
    for choice, (psnr, activations) in measured(local).items():
        assert measured(distributed)[choice] == (pytest.approx(psnr), activations)
    nodes = {t.user_attrs.get("node") for t in distributed}
    assert len(nodes) == 2 and None not in nodes  # both nodes measured trials
