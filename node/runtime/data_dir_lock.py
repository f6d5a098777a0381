"""One node per data dir: an exclusive ``flock`` on ``DIR/node.lock``.

Two processes on one data dir would share an identity and a SQLite file while each keeps
its own sequence counter and in-memory index: the server would equivocate against itself.
The lock is taken before anything else in the data dir is opened. ``flock`` belongs to
the open file, so the kernel releases it when the process dies however it dies; a lock
file left behind by a killed node therefore never blocks the next one (the file is only
a place to hang the lock and to say who holds it).

The holder writes its pid, listen URL and control socket path into the file, so a second
node can name the running one in its error, and ``tapsim attach`` / ``status`` can find
the socket when its path had to be moved out of a deep data dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import orjson

LOCK_NAME = "node.lock"


class DataDirInUse(Exception):
    """Another live process holds the data dir; the message names it, in one line."""


def read_lock_info(data_dir: Path) -> dict:
    """What the holder wrote about itself (pid, url, control); {} when unreadable."""
    try:
        info = orjson.loads((Path(data_dir) / LOCK_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


class DataDirLock:
    """Held from :meth:`acquire` until :meth:`release` or the process's end."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None
        self._info: dict = {}

    def acquire(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(self._holder_words()) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.update(pid=os.getpid())

    def update(self, **facts: object) -> None:
        """Record facts about the holder (rewritten in place: the lock stays held)."""
        if self._fd is None:
            return
        self._info.update(facts)
        data = orjson.dumps(self._info)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock

    def _holder_words(self) -> str:
        info = read_lock_info(self.data_dir)
        who = f"pid {info['pid']}" if isinstance(info.get("pid"), int) else "another process"
        where = f", listening on {info['url']}" if isinstance(info.get("url"), str) else ""
        return (
            f"data dir {self.data_dir} is in use by a running node ({who}{where}); "
            f"look at it with `tapsim attach --data-dir {self.data_dir}`"
        )
