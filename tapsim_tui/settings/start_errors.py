"""The words a user reads when a node cannot start: one line each, no traceback."""

from __future__ import annotations


class NodeStartError(Exception):
    """The node could not start; the message is fit to show the user as is."""


def describe_start_error(exc: BaseException) -> str:
    """One line a user can act on, for the errors a node start can meet."""
    # Late: these pull in the node's runtime and transport, which `tapsim node` imports
    # only after its options were checked.
    from node.runtime.seed_file import IdentityError
    from node.storage.errors import StoreFileError
    from node.transport.serving import PortInUse

    if isinstance(exc, PortInUse | StoreFileError):
        return str(exc)
    if isinstance(exc, IdentityError):
        return str(exc)
    if isinstance(exc, PermissionError):
        return f"cannot use {exc.filename}: permission denied"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"{type(exc).__name__}: {exc}"


def start_timed_out(server_id: str, timeout: float) -> NodeStartError:
    return NodeStartError(f"{server_id}: node did not start in {timeout:g} s")


def died_at_start(server_id: str) -> NodeStartError:
    return NodeStartError(f"{server_id}: node process died at start")
