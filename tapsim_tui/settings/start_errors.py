"""The words a user reads when a node cannot start: one line each, no traceback.

Every way of running a node (`tapsim node`, the dashboard's node process, the demo)
turns what its start raised into words here, so each error names the file, directory or
address involved the same way everywhere, and a start failure is exit status 1 (a usage
or config error, found before anything starts, is 2).
"""

from __future__ import annotations

import sqlite3
import ssl
from pathlib import Path

from node.runtime.config import ConfigError, NodeConfig


class NodeStartError(Exception):
    """The node could not start; the message is fit to show the user as is."""


def describe_start_error(exc: BaseException, config: NodeConfig | None = None) -> str:
    """One line a user can act on, for the errors a node start can meet."""
    # Late: these pull in the node's runtime and transport, which `tapsim node` imports
    # only after its options were checked.
    from node.runtime.data_dir_lock import DataDirInUse
    from node.runtime.seed_file import IdentityError
    from node.storage.errors import StoreFileError, StoreUnavailable
    from node.transport.serving import PortInUse

    one_line = PortInUse | ConfigError | NodeStartError | DataDirInUse | StoreFileError
    if isinstance(exc, one_line | StoreUnavailable):
        return str(exc)
    # The data dir is made first by the data-dir lock, else by the seed file's loader.
    cause = exc.__cause__ if isinstance(exc, IdentityError) else exc
    if isinstance(cause, FileExistsError | NotADirectoryError) and cause.filename:
        return _file_in_the_way(Path(cause.filename))
    if isinstance(exc, IdentityError):
        return str(exc)
    if isinstance(exc, sqlite3.Error):
        store = f" {config.data_dir / 'events.sqlite3'}" if config is not None else ""
        return f"cannot open the event store{store}: {exc}"
    if isinstance(exc, ssl.SSLError) and config is not None and config.tls_cert:
        return (
            f"TLS certificate {config.tls_cert} and key {config.tls_key} cannot be used: "
            f"{exc.reason or exc}"
        )
    if isinstance(exc, PermissionError):
        return f"cannot use {exc.filename}: permission denied"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"{type(exc).__name__}: {exc}"


def _file_in_the_way(data_dir: Path) -> str:
    """The data dir cannot be made: name the file that stands where a directory must."""
    for path in (data_dir, *data_dir.parents):
        if path.exists() and not path.is_dir():
            if path == data_dir:
                return f"data dir {data_dir} is a file, not a directory"
            return f"data dir {data_dir}: {path} is a file, not a directory"
    return f"cannot create data dir {data_dir}"


def start_timed_out(server_id: str, timeout: float) -> NodeStartError:
    return NodeStartError(f"{server_id}: node did not start in {timeout:g} s")


def died_at_start(server_id: str) -> NodeStartError:
    return NodeStartError(f"{server_id}: node process died at start")
