"""The on-disk cache of built images: where it lives, its lock, and memoized lookups.

Entries are built in a scratch directory and renamed into place under an exclusive ``flock``, so an
interrupted build leaves nothing half-made and two builds never race.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Log = Callable[[str], None]


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/aovisor``, else ``~/.cache/aovisor``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "aovisor"


@contextmanager
def exclusive_lock(path: Path, log: Log | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); say so through ``log`` if we wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"waiting for another build to finish (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_entry(
    root: Path,
    key: str,
    build: Callable[[Path], None],
    *,
    done_file: str,
    force: bool = False,
    log: Log | None = None,
    stale: Sequence[str] = (".build-*",),
) -> Path:
    """The cache entry ``root/key``: made by ``build(work)`` in ``root/.build-<key>`` and renamed into place,
    under the cache's lock, unless it is there already (it has ``done_file``) and not ``force``.  Leftovers
    of builds that died (the ``stale`` patterns under ``root``) are removed first."""
    final = root / key
    if (final / done_file).is_file() and not force:
        return final
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / ".lock", log):
        if (final / done_file).is_file() and not force:
            return final
        for pattern in stale:
            for leftover in root.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)  # we hold the lock: nobody is building it
        work = root / f".build-{key}"
        work.mkdir()
        try:
            build(work)
            if final.exists():
                shutil.rmtree(final)
            os.rename(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def memoized(memo: Path, fingerprint: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``, or what it returned last time when ``fingerprint`` is unchanged (kept in ``memo``)."""
    try:
        remembered = json.loads(memo.read_text())
        if remembered["fingerprint"] == fingerprint and isinstance(remembered["value"], dict):
            return dict(remembered["value"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    value = compute()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        temporary = memo.with_name(f".{memo.name}.{os.getpid()}")
        temporary.write_text(json.dumps({"fingerprint": fingerprint, "value": value}))
        os.replace(temporary, memo)
    except OSError:
        pass  # the memo only saves time
    return value
