"""`tapsim workers`: the load balancer's config, and the group → worker table.

Several workers serve one server (docs/scaling.md): HAProxy routes each
``/_taps/federation/encrypted-groups/{group}/…`` request to the group's owner and
anything else to any worker. The owner is the row of the store's table
(``node.storage.ownership``), else the CRC-32 of the group id modulo the worker count,
which HAProxy computes itself (``crc32``, ``mod``); the rows reach it as a map file
(``tapsim workers map``), so a moved group is routed by its row.

Actions:

- ``haproxy``: print an haproxy.cfg for a frontend address and the workers' addresses.
- ``map``: print the table as an HAProxy map file (``group worker`` a line).
- ``owners``: the worker count and every row, for people.
- ``move GROUP K``: write GROUP's row (then rewrite the map and restart both workers).
- ``resize N``: change the recorded worker count (rows keep their owner).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from node.runtime.config import ConfigError, NodeConfig, check_group_id, parse_listen
from node.transport.routes import PREFIX

ACTIONS = ("haproxy", "map", "owners", "move", "resize")
DEFAULT_MAP = "/etc/haproxy/tapsim-owners.map"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def haproxy_config(
    frontend: tuple[str, int],
    workers: Sequence[tuple[str, int]],
    map_file: str = DEFAULT_MAP,
    *,
    check_interval: str = "1s",
) -> str:
    """An haproxy.cfg (HAProxy 2.6) for one server of ``len(workers)`` workers, h2c
    everywhere: group requests to their owner, anything else to any live worker."""
    n = len(workers)
    servers = "\n".join(
        f"    server w{k} {_address(*a)} proto h2 check inter {check_interval} fall 1 rise 1"
        for k, a in enumerate(workers)
    )
    owners = "\n".join(
        f"backend worker{k}\n    server w{k} {_address(*a)} proto h2" for k, a in enumerate(workers)
    )
    groups = f"{PREFIX}/encrypted-groups/"
    unmapped = "group_path !{ var(txn.worker) -m found }"
    return f"""\
# One tapsim server served by {n} workers (docs/scaling.md), made by 'tapsim workers haproxy'.
# Requests under {groups}{{group}}/ go to the group's owner: its
# row in {map_file} ('tapsim workers map'), else crc32(group) mod {n}.
global
    # maxconn follows the file-descriptor limit (ulimit -n); each peer stream is one
    # frontend stream and one backend stream.

defaults
    mode http
    timeout connect 5s
    timeout client 5m
    timeout server 5m
    retries 3
    option redispatch

frontend taps
    bind {_address(*frontend)} proto h2
    acl group_path path_beg {groups}
    http-request set-var(txn.group) path,field(5,/),url_dec if group_path
    http-request set-var(txn.worker) var(txn.group),map({map_file}) if group_path
    http-request set-var(txn.worker) var(txn.group),crc32,mod({n}) if {unmapped}
    use_backend worker%[var(txn.worker)] if group_path
    default_backend any_worker

{owners}

backend any_worker
    balance roundrobin
{servers}
"""


def owners_map(rows: dict[str, int]) -> str:
    """The table as an HAProxy map file: ``group worker`` per line, sorted."""
    return "".join(f"{group} {worker}\n" for group, worker in sorted(rows.items()))


def add_workers_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS, help="what to do (see the description)")
    p.add_argument("operands", nargs="*", metavar="ARG", help="move: GROUP K; resize: N")
    p.add_argument(
        "--frontend",
        metavar="HOST:PORT",
        default="0.0.0.0:8448",
        help="haproxy: where HAProxy listens for peers (default 0.0.0.0:8448)",
    )
    p.add_argument(
        "--worker-at",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="haproxy: worker K's listen address, in order from worker 0 (repeat)",
    )
    p.add_argument(
        "--map",
        metavar="FILE",
        default=DEFAULT_MAP,
        help=f"haproxy: the map file 'tapsim workers map' writes (default {DEFAULT_MAP})",
    )


def _worker_index(text: str, workers: int) -> int:
    if not text.isdigit() or not int(text) < workers:
        raise ConfigError(
            f"bad worker {text!r}: the store records {workers} workers (0-{workers - 1})"
        )
    return int(text)


def run_workers(args: argparse.Namespace, config: NodeConfig) -> int:
    action, operands = args.action, list(args.operands)
    wanted = {"move": 2, "resize": 1}.get(action, 0)
    if len(operands) != wanted:
        shape = {"move": "GROUP K", "resize": "N"}.get(action, "no operands")
        raise ConfigError(f"'tapsim workers {action}' takes {shape}")
    if action == "haproxy":
        if len(args.worker_at) < 2:
            raise ConfigError("'tapsim workers haproxy' needs --worker-at for each of 2+ workers")
        frontend = parse_listen(args.frontend)
        workers = [parse_listen(a) for a in args.worker_at]
        print(haproxy_config(frontend, workers, args.map), end="")
        return 0
    from node.storage.backends import SHARED, is_postgres_url, open_store

    location = config.store_location
    store = open_store(location, worker=SHARED if is_postgres_url(location) else None)
    try:
        count = store.worker_count(0)  # 0: read only
        if action == "map":
            print(owners_map(store.owners()), end="")
        elif action == "owners":
            rows = store.owners()
            print(f"{count or 'no'} workers recorded; {len(rows)} groups with a row")
            for group, worker in sorted(rows.items()):
                print(f"{group} {worker}")
        elif action == "move":
            group = check_group_id(operands[0])
            if not count:
                raise ConfigError("no worker count recorded: start the workers first")
            store.set_owner(group, _worker_index(operands[1], count))
            print(
                f"{group} → worker {operands[1]}: restart its old owner, rewrite the map "
                "('tapsim workers map') and reload HAProxy, restart worker "
                f"{operands[1]} (docs/scaling.md)"
            )
        else:
            if not operands[0].isdigit() or not 1 <= int(operands[0]) <= 64:
                raise ConfigError(f"bad worker count {operands[0]!r}: give 1 to 64")
            store.set_worker_count(int(operands[0]))
            print(
                f"{operands[0]} workers: regenerate the HAProxy config and the map, then "
                "restart every worker as K/N"
            )
    finally:
        store.close()
    return 0
