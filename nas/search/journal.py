"""The study's journal file (``<run>/study.journal``), repaired after a torn write before Optuna opens it.

Optuna appends one JSON record per line and ignores a last line without its newline, but the next append
lands on that partial line and turns it into a record that no later read gets past (``JSONDecodeError``):
the study would be lost. ``repair_journal`` runs under Optuna's own journal lock, so it never races a
writer: a torn tail (no final newline, or a last line that is not JSON) is copied to
``study.journal.torn-<UTC time>`` (user data is never deleted), the journal is cut back to its last
complete record and fsynced, and one warning line is printed. A last record that lost only its newline
gets it back.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from nas.errors import SrnasError
from nas.io import atomic_write


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def complete_length(data: bytes) -> int:
    """The length of the prefix of ``data`` that ends with the journal's last complete record: everything
    up to the last newline, less a last line that is not a JSON record."""
    end = data.rfind(b"\n") + 1  # 0 when no newline at all
    if end == 0:
        return 0
    start = data.rfind(b"\n", 0, end - 1) + 1
    return end if _is_record(data[start : end - 1]) else start


def _aside_path(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return path.with_name(f"{path.name}.torn-{stamp}")


def repair_journal(path: str | Path) -> Path | None:
    """Cut a torn last record off the journal at ``path`` (see the module docstring); returns the file the
    torn bytes were moved to, or None when the journal was whole (or absent)."""
    path = Path(path)
    if not path.is_file():
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "r+b") as fh:
            data = fh.read()
            keep = complete_length(data)
            if keep == len(data):
                return None
            if _is_record(data[keep:]):  # a whole record that lost only its newline
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
                return None
            aside = atomic_write(_aside_path(path), data[keep:])
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        lock.release()
    print(
        f"srnas: warning: {path}: torn last record ({len(data) - keep} bytes, an interrupted write) moved to "
        f"{aside.name}; the study continues from its last complete record",
        file=sys.stderr,
    )
    return aside


def journal_storage(path: str | Path) -> JournalStorage:
    """The Optuna storage of the journal at ``path``, repaired first; a record broken before the last one (not a
    torn write: the file was edited or damaged) is an error, the file is left as it is."""
    repair_journal(path)
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except json.JSONDecodeError as exc:
        raise SrnasError(
            f"{path} is corrupted before its last record ({exc}); move it aside to start the study over"
        ) from exc
