"""Official zoo weights by name: found locally, or downloaded once into a cache, always hash-checked.

Each zoo YAML's ``checkpoint:`` section names the official file and where it comes from::

    checkpoint:
      file: rfdn_aim2020_x4.pth            # the file name everywhere below
      url: https://.../RFDN_AIM.pth        # its public source (pinned to a commit)
      size: 1754927                        # bytes
      sha256: 11af8ec8...                  # of the whole file

A zoo name resolves to the first of these that holds ``file`` (as torch.hub and timm do):

1. ``$SRNAS_WEIGHTS_DIR/`` (a folder of already downloaded files, flat or with a ``checkpoints/`` subfolder),
2. the reference kit's ``checkpoints/`` (``nas.paths.reference_dir()``),
3. the cache ``$SRNAS_HOME/weights/`` (default ``~/.cache/srnas/weights``), filled by ``srnas zoo download``.

Files found in 1 and 2 are the user's: their size and hash are checked, a mismatch is an error naming the file.
A download streams into a temporary file next to the cache entry and is renamed into place only after its size
and sha256 match, so a failed, truncated or wrong transfer never leaves anything in the cache.
``$SRNAS_WEIGHTS_MIRROR`` (a base URL) replaces each file's URL by ``MIRROR/<file>`` (a local mirror or proxy).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from nas.errors import CheckpointError, SpecError
from nas.io import atomic_path, remove_stale_temps
from nas.paths import home_dir, reference_dir

CHUNK = 1 << 16
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WeightsSource:
    """Where a zoo model's official checkpoint comes from (the ``checkpoint:`` section of its YAML)."""

    name: str
    file: str
    url: str | None = None
    size: int | None = None
    sha256: str | None = None

    @classmethod
    def from_entry(cls, name: str, section: dict[str, Any] | None) -> WeightsSource | None:
        if not section or not section.get("file"):
            return None
        unknown = set(section) - {"file", "url", "size", "sha256", "rename"}
        if unknown:
            raise SpecError(f"zoo {name!r}: unknown checkpoint keys {sorted(unknown)}")
        sha = section.get("sha256")
        if sha is not None and (len(str(sha)) != 64 or any(c not in "0123456789abcdef" for c in str(sha))):
            raise SpecError(f"zoo {name!r}: checkpoint sha256 must be 64 lowercase hex digits, got {sha!r}")
        size = section.get("size")
        return cls(name, str(section["file"]), section.get("url"), int(size) if size is not None else None, sha)

    def download_url(self) -> str | None:
        mirror = os.environ.get("SRNAS_WEIGHTS_MIRROR")
        return f"{mirror.rstrip('/')}/{self.file}" if mirror else self.url


def cache_dir() -> Path:
    return home_dir() / "weights"


def search_dirs() -> list[Path]:
    """Folders looked in, in order: ``$SRNAS_WEIGHTS_DIR`` (and its ``checkpoints/``), the kit, the cache."""
    dirs: list[Path] = []
    env = os.environ.get("SRNAS_WEIGHTS_DIR")
    if env:
        dirs += [Path(env).expanduser(), Path(env).expanduser() / "checkpoints"]
    ref = reference_dir()
    if ref is not None:
        dirs.append(ref / "checkpoints")
    dirs.append(cache_dir())
    return dirs


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@cache
def _verified(path: str, mtime_ns: int, size: int, sha256: str | None, expected_size: int | None) -> str | None:
    """None when the file matches its recorded size and hash, else what is wrong (memoised per file state)."""
    if expected_size is not None and size != expected_size:
        return f"has {size} bytes, expected {expected_size}"
    if sha256 is not None and (got := sha256_of(Path(path))) != sha256:
        return f"has sha256 {got}, expected {sha256}"
    return None


def verify(path: Path, source: WeightsSource) -> None:
    """CheckpointError naming ``path`` when it is not the official file."""
    st = path.stat()
    problem = _verified(str(path), st.st_mtime_ns, st.st_size, source.sha256, source.size)
    if problem:
        raise CheckpointError(
            f"{path} is not the official {source.file} for {source.name!r}: it {problem} "
            f"(delete it, or pass your own file with --weights)"
        )


def find(source: WeightsSource) -> Path | None:
    """The verified local copy of ``source``, or None when no folder holds it."""
    for folder in search_dirs():
        path = folder / source.file
        if path.is_file():
            verify(path, source)
            return path
    return None


def missing_message(source: WeightsSource) -> str:
    where = ", ".join(str(d) for d in search_dirs())
    url = source.download_url()
    fetch = f"`srnas zoo download {source.name}` (fetches {url})" if url else "no public URL is recorded"
    return f"official weights {source.file} for {source.name!r} not found in {where}; {fetch}, or pass --weights FILE"


def download(
    source: WeightsSource, force: bool = False, progress: Callable[[int, int | None], None] | None = None
) -> Path:
    """The cached official file, fetched and verified first when needed; CheckpointError on any failure."""
    if not force and (found := find(source)) is not None:
        return found
    url = source.download_url()
    if not url:
        raise CheckpointError(f"zoo {source.name!r} records no URL for {source.file}; pass --weights FILE")
    if source.sha256 is None:
        raise CheckpointError(f"zoo {source.name!r} records no sha256 for {source.file}: refusing an unverified file")
    target = cache_dir() / source.file
    remove_stale_temps(target.parent, recursive=False)  # what a killed download left
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, atomic_path(target) as tmp:
            _stream(response, tmp, source, url, progress)
    except urllib.error.HTTPError as exc:
        raise CheckpointError(f"download of {source.file} failed: HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CheckpointError(f"download of {source.file} from {url} failed: {reason}") from None
    return target


def _stream(response, tmp: Path, source: WeightsSource, url: str, progress) -> None:
    """Copy ``response`` into ``tmp`` while hashing; raise CheckpointError unless size and sha256 match."""
    digest = hashlib.sha256()
    total = source.size
    done = 0
    with open(tmp, "wb") as out:
        for chunk in iter(lambda: response.read(CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
            done += len(chunk)
            if total is not None and done > total:
                raise CheckpointError(f"download of {source.file} from {url}: more than the expected {total} bytes")
            if progress:
                progress(done, total)
    if total is not None and done != total:
        raise CheckpointError(f"download of {source.file} from {url} was cut short: {done} of {total} bytes")
    if digest.hexdigest() != source.sha256:
        raise CheckpointError(
            f"download of {source.file} from {url} has sha256 {digest.hexdigest()}, expected {source.sha256}"
        )
