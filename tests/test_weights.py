"""Official weights by name: local lookup, hash checks, and downloads from a local HTTP server on 127.0.0.1
(good file, wrong bytes, truncated transfer, 404) that never leave anything half-written in the cache."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nas.errors import CheckpointError, SpecError
from nas.zoo import weights as W

PAYLOAD = bytes(range(256)) * 1000  # 256 kB


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncate: set[str] = set()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.files:
            self.send_error(404)
            return
        data = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 3] if name in self.truncate else data)
        if name in self.truncate:
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        _Handler.files, _Handler.truncate = {}, set()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SRNAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SRNAS_REFERENCE_DIR", str(tmp_path / "no-kit"))  # the kit must not satisfy lookups here
    monkeypatch.delenv("SRNAS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("SRNAS_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "home"


def _source(url: str, data: bytes = PAYLOAD, name: str = "m.pth") -> W.WeightsSource:
    return W.WeightsSource("toy", name, f"{url}/{name}", len(data), hashlib.sha256(data).hexdigest())


def _cache_files(home: Path) -> list[str]:
    folder = home / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_download_verifies_and_caches_once(server, home):
    _Handler.files = {"m.pth": PAYLOAD}
    seen: list[int] = []
    path = W.download(_source(server), progress=lambda done, total: seen.append(done))
    assert path == home / "weights" / "m.pth" and path.read_bytes() == PAYLOAD
    assert seen[-1] == len(PAYLOAD)
    _Handler.files = {}  # a second call finds the cached file and never asks the server
    assert W.download(_source(server)) == path
    assert _cache_files(home) == ["m.pth"]


@pytest.mark.parametrize(
    "case, served, truncate, match",
    [
        ("wrong bytes", PAYLOAD[::-1], False, "has sha256"),
        ("truncated", PAYLOAD, True, "cut short|failed"),
        ("404", None, False, "HTTP 404"),
    ],
)
def test_failed_downloads_leave_nothing(server, home, case, served, truncate, match):
    if served is not None:
        _Handler.files = {"m.pth": served}
    if truncate:
        _Handler.truncate = {"m.pth"}
    with pytest.raises(CheckpointError, match=match):
        W.download(_source(server))
    assert _cache_files(home) == []


def test_unreachable_server_is_one_clear_error(home):
    source = W.WeightsSource("toy", "m.pth", "http://127.0.0.1:1/m.pth", 3, "0" * 64)
    with pytest.raises(CheckpointError, match=r"127\.0\.0\.1:1/m\.pth failed"):
        W.download(source)
    assert _cache_files(home) == []


def test_mirror_replaces_the_url(server, home, monkeypatch):
    _Handler.files = {"m.pth": PAYLOAD}
    monkeypatch.setenv("SRNAS_WEIGHTS_MIRROR", server + "/")
    source = W.WeightsSource("toy", "m.pth", "http://127.0.0.1:1/elsewhere", len(PAYLOAD), _source("").sha256)
    assert W.download(source).read_bytes() == PAYLOAD


def test_local_folders_are_found_in_order_and_checked(tmp_path, home, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    source = _source("http://127.0.0.1:1")
    assert W.find(source) is None
    assert "srnas zoo download toy" in W.missing_message(source) and "--weights" in W.missing_message(source)
    (mine / "m.pth").write_bytes(PAYLOAD)
    monkeypatch.setenv("SRNAS_WEIGHTS_DIR", str(mine))
    assert W.find(source) == mine / "m.pth"
    (mine / "m.pth").write_bytes(PAYLOAD[:-1] + b"x")  # same size, other bytes
    with pytest.raises(CheckpointError, match="not the official m.pth"):
        W.find(source)


def test_checkpoint_sections_are_validated():
    assert W.WeightsSource.from_entry("x", {"file": None}) is None
    with pytest.raises(SpecError, match="unknown checkpoint keys"):
        W.WeightsSource.from_entry("x", {"file": "a.pth", "sha": "0"})
    with pytest.raises(SpecError, match="64 lowercase hex"):
        W.WeightsSource.from_entry("x", {"file": "a.pth", "sha256": "abc"})


def test_zoo_download_of_a_kit_file_then_use_by_name(reference, server, home, monkeypatch, capsys):
    """`srnas zoo download rfdn` from a local mirror serving the kit file; then `srnas eval rfdn` needs no --weights."""
    from nas import zoo
    from nas.cli.main import main

    kit_file = reference / "checkpoints" / "rfdn_aim2020_x4.pth"
    _Handler.files = {"rfdn_aim2020_x4.pth": kit_file.read_bytes()}
    monkeypatch.setenv("SRNAS_WEIGHTS_MIRROR", server)
    assert zoo.checkpoint_path("rfdn") is None  # home has no cache, the kit is hidden
    assert main(["eval", "rfdn", "--hr", str(reference / "images" / "Set5")]) == 1
    assert "srnas zoo download rfdn" in capsys.readouterr().err
    assert main(["zoo", "download", "rfdn"]) == 0
    assert zoo.checkpoint_path("rfdn") == home / "weights" / "rfdn_aim2020_x4.pth"
    assert W.sha256_of(home / "weights" / "rfdn_aim2020_x4.pth") == zoo.weights_source("rfdn").sha256
    _Handler.files = {"rfdn_aim2020_x4.pth": kit_file.read_bytes()[:1000]}  # --force with a broken transfer
    assert main(["zoo", "download", "rfdn", "--force"]) == 1
    assert _cache_files(home) == ["rfdn_aim2020_x4.pth"]  # the good copy stays, no temporary left


def test_every_zoo_checkpoint_records_a_pinned_url_size_and_hash(reference):
    from nas import zoo

    for name in zoo.list_zoo():
        source = zoo.weights_source(name)
        if source is None:
            continue
        assert source.url and "/raw/" in source.url and source.size and source.sha256, name
        assert W.sha256_of(reference / "checkpoints" / source.file) == source.sha256, name
