"""Where a node's control socket lives, and how a client finds it.

The socket is ``DIR/control.sock``, next to what it controls. A Unix socket's path must
fit ``sun_path`` (108 bytes on Linux, 104 on macOS, counting the NUL), so for a deep data
dir the socket moves to a private directory under the runtime dir (``$XDG_RUNTIME_DIR``,
else the temp dir) with a name derived from the data dir; the node records the path in
its lock file (``node.lock``), which is where ``tapsim attach`` and ``status`` look first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from node.runtime.data_dir_lock import read_lock_info

SOCKET_NAME = "control.sock"
MAX_PATH = 100  # bytes, below every platform's sun_path


class ControlPathError(OSError):
    """No safe place for the socket; the message says why."""


def fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= MAX_PATH


def socket_path_for(data_dir: Path, *, runtime_dir: Path | None = None) -> Path:
    """The path a node on ``data_dir`` binds (creating the fallback directory)."""
    preferred = Path(os.path.abspath(data_dir)) / SOCKET_NAME
    if fits(preferred):
        return preferred
    base = runtime_dir or _runtime_dir()
    private = base / f"tapsim-{os.getuid()}"
    _private_dir(private)
    digest = hashlib.sha256(os.fsencode(os.path.realpath(data_dir))).hexdigest()[:20]
    path = private / f"{digest}.sock"
    if not fits(path):
        raise ControlPathError(f"no short path for the control socket of {data_dir}")
    return path


def find_socket(data_dir: Path) -> Path:
    """Where a node on ``data_dir`` listens, as its lock file says, else the default."""
    recorded = read_lock_info(data_dir).get("control")
    if isinstance(recorded, str) and recorded:
        return Path(recorded)
    return Path(os.path.abspath(data_dir)) / SOCKET_NAME


def _runtime_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and fits(Path(xdg) / ("x" * 48)):
        return Path(xdg)
    return Path(tempfile.gettempdir())


def _private_dir(path: Path) -> None:
    """A directory only we can enter: created 0700, or refused if anyone else owns it."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ControlPathError(f"{path} is not a directory of ours: not using it for a socket")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
