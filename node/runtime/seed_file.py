"""Our identity's one secret on disk: the Ed25519 seed in ``DATA_DIR/identity.key``.

The protocol layer's :class:`~node.protocol.identity.Identity` does no I/O; the runtime
reads the seed here (or creates it, mode 0600, atomically) and builds the identity from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from node.protocol.identity import SEED_SIZE, Identity

SEED_FILE = "identity.key"


class IdentityError(Exception):
    """The node's own key cannot be loaded or stored: an operator problem, not a peer's."""


def load_identity(
    data_dir: Path, server_id: str, url: str = "", *, now: float | None = None
) -> Identity:
    """Our key from ``data_dir/identity.key`` (raw 32-byte seed), created 0600 if absent.

    The key document is signed afresh at each start (valid a year from now), so only the
    seed needs to be kept; peers see the same key with a later ``valid_until``, which
    simply renews their pin.
    """
    seed = _load_or_create_seed(Path(data_dir))
    return Identity.from_seed(seed, server_id, url, now=now)


def _load_or_create_seed(data_dir: Path) -> bytes:
    path = data_dir / SEED_FILE
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"cannot create data directory {data_dir}: {exc}") from exc
    if not path.exists():
        _create_seed_file(path)
    try:
        with open(path, "rb") as f:
            seed = f.read(SEED_SIZE + 1)
        mode = os.stat(path).st_mode & 0o777
    except OSError as exc:
        raise IdentityError(f"cannot read identity key {path}: {exc}") from exc
    if len(seed) != SEED_SIZE:
        raise IdentityError(
            f"identity key {path} is corrupt: expected {SEED_SIZE} bytes, found "
            f"{'more' if len(seed) > SEED_SIZE else len(seed)}; move it away to make a new "
            "identity (peers that pinned the old key will refuse the new one)"
        )
    if mode & 0o077:
        try:
            os.chmod(path, 0o600)  # someone loosened it: tighten rather than refuse to start
        except OSError as exc:
            raise IdentityError(f"identity key {path} has mode {mode:o}, not 0600: {exc}") from exc
    return seed


def _create_seed_file(path: Path) -> None:
    """Write a fresh seed atomically: a crash leaves either no key file or a whole one.

    The seed goes to a temporary file (0600 from the start, never wider), is fsynced,
    then linked into place; ``link`` fails if another process won the race, in which
    case its key is the one we use.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    seed = os.urandom(SEED_SIZE)
    try:
        tmp.unlink(missing_ok=True)  # left by a crash of an earlier process with our pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, seed)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: no race protection there
            if not path.exists():
                os.rename(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise IdentityError(f"cannot create identity key {path}: {exc}") from exc
