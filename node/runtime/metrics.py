"""Prometheus metrics of a running node (`tapsim node --metrics HOST:PORT`).

The exposition is ``prometheus_client``'s (never hand-written). Most values are read at
scrape time from one snapshot (``node.view``), on the node's loop, so a scrape sees one
consistent picture and costs nothing between scrapes. Two things cannot be read at a
moment and are sampled once a second instead: the ACK lag of every stream that is up (a
histogram), and finished repairs (counted by result, with their round trips and bytes,
the first time they are seen finished). Names follow the Prometheus conventions:
``tapsim_`` prefix, base units (seconds, bytes), ``_total`` for counters; the README's
"Metrics" section lists them. Process RSS and CPU are the client library's standard
``process_*`` metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from node.sync.planner import RepairState as DigestState
from node.transport.serving import RunningServer, start_server
from node.view.snapshot import NodeSnapshot, RepairSnapshot, StreamState

SAMPLE_EVERY = 1.0  # seconds between ACK-lag and repair samples
ACK_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STREAM_LABELS = ("peer", "group", "role")


@dataclass(frozen=True, slots=True)
class MetricsPorts:
    snapshot: Callable[[], NodeSnapshot]
    repairs: Callable[[], Iterable[RepairSnapshot]]
    ack_lags: Callable[[], Iterable[float | None]]  # per stream that is up; None: all acked


class _SnapshotCollector(Collector):
    """Everything that is a value at a moment, from one snapshot per scrape."""

    def __init__(self, ports: MetricsPorts, repairs: _RepairCounts) -> None:
        self._ports = ports
        self._repairs = repairs

    def collect(self):
        s = self._ports.snapshot()
        info = GaugeMetricFamily("tapsim_node_info", "This node", labels=["server_id", "key_id"])
        info.add_metric([s.server_id, s.key_id], 1)
        yield info
        yield GaugeMetricFamily(
            "tapsim_start_time_seconds", "When the node started (Unix time)", value=s.started_at
        )
        by_state = GaugeMetricFamily(
            "tapsim_streams", "Streams and links by state", labels=["state"]
        )
        for state in StreamState:
            by_state.add_metric([state.value], sum(1 for st in s.streams if st.state == state))
        yield by_state

        def per_stream(name: str, doc: str, value) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=list(STREAM_LABELS))
            for st in s.streams:
                v = value(st)
                if v is not None:
                    family.add_metric([st.peer_id, st.group_id, st.role], v)
            return family

        def per_stream_total(name: str, doc: str, value) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=list(STREAM_LABELS))
            for st in s.streams:
                family.add_metric([st.peer_id, st.group_id, st.role], value(st))
            return family

        ms = 1000.0
        yield per_stream(
            "tapsim_stream_rtt_seconds",
            "Last PING round trip",
            lambda st: None if st.rtt_ms is None else st.rtt_ms / ms,
        )
        yield per_stream(
            "tapsim_stream_ack_lag_seconds",
            "Age of the oldest event sent and not yet acknowledged (0: none)",
            lambda st: 0.0 if st.ack_lag_ms is None else st.ack_lag_ms / ms,
        )
        yield per_stream(
            "tapsim_stream_unacked_events",
            "Events sent, not yet acknowledged",
            lambda st: st.unacked,
        )
        yield per_stream(
            "tapsim_stream_send_credit_events",
            "Events we may still send (credit the peer granted us)",
            lambda st: st.credit_out_events,
        )
        yield per_stream(
            "tapsim_stream_send_credit_bytes",
            "Bytes we may still send (credit the peer granted us)",
            lambda st: st.credit_out_bytes,
        )
        yield per_stream(
            "tapsim_stream_receive_credit_events",
            "Events the peer may still send us (credit we granted)",
            lambda st: st.credit_in_events,
        )
        yield per_stream(
            "tapsim_stream_receive_credit_bytes",
            "Bytes the peer may still send us (credit we granted)",
            lambda st: st.credit_in_bytes,
        )
        yield per_stream_total(
            "tapsim_stream_events_received",
            "Events received on the stream",
            lambda st: st.events_in,
        )
        yield per_stream_total(
            "tapsim_stream_events_sent",
            "Events sent (relayed or own) on the stream",
            lambda st: st.events_out,
        )
        yield per_stream_total(
            "tapsim_stream_received_bytes", "Bytes received on the stream", lambda st: st.bytes_in
        )
        yield per_stream_total(
            "tapsim_stream_sent_bytes", "Bytes sent on the stream", lambda st: st.bytes_out
        )
        outbox = GaugeMetricFamily(
            "tapsim_outbox_events", "Events queued durably for a peer", labels=["peer", "group"]
        )
        seen: dict[tuple[str, str], int] = {}
        for st in s.streams:
            key = (st.peer_id, st.group_id)
            seen[key] = max(seen.get(key, 0), st.outbox)
        for (peer, group), n in sorted(seen.items()):
            outbox.add_metric([peer, group], n)
        yield outbox
        digest = GaugeMetricFamily(
            "tapsim_digest_state",
            "Anti-entropy state per peer and group: 1 for the current state",
            labels=["peer", "group", "state"],
        )
        states: dict[tuple[str, str], str] = {}
        for st in s.streams:
            states.setdefault((st.peer_id, st.group_id), str(st.digest_state))
        for r in s.repairs:
            states.setdefault((r.peer_id, r.group_id), str(r.state))
        for (peer, group), current in sorted(states.items()):
            for state in DigestState:
                digest.add_metric([peer, group, state.value], 1 if state.value == current else 0)
        yield digest
        c = s.counters
        for key, name, doc in (
            ("events_stored", "tapsim_events_stored", "Events stored (own and received)"),
            ("events_published", "tapsim_events_published", "Own events authored"),
            ("events_rejected", "tapsim_events_rejected", "Events rejected by the §4.3 checks"),
            ("streams_accepted", "tapsim_streams_accepted", "Inbound streams accepted"),
            ("streams_initiated", "tapsim_streams_initiated", "Outbound streams opened"),
        ):
            yield CounterMetricFamily(name, doc, value=c.get(key, 0))
        yield GaugeMetricFamily(
            "tapsim_ingest_backlog_events",
            "Events received and waiting for the store",
            value=c.get("ingest_backlog", 0),
        )
        yield from self._repairs.families()


class _RepairCounts:
    """Finished repairs, counted once each by result, with their round trips and bytes."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, float]] = set()
        self.count: dict[str, int] = {}
        self.rounds: dict[str, int] = {}
        self.bytes: dict[str, int] = {}

    def sample(self, repairs: Iterable[RepairSnapshot]) -> None:
        for r in repairs:
            if r.finished_at is None or r.started_at is None:
                continue
            key = (r.peer_id, r.group_id, r.started_at)
            if key in self._seen:
                continue
            self._seen.add(key)
            result = str(r.state)
            self.count[result] = self.count.get(result, 0) + 1
            self.rounds[result] = self.rounds.get(result, 0) + r.round_trips
            self.bytes[result] = self.bytes.get(result, 0) + r.bytes_moved

    def families(self):
        for name, doc, values in (
            ("tapsim_repairs", "Finished anti-entropy repairs by result", self.count),
            ("tapsim_repair_round_trips", "Round trips of finished repairs", self.rounds),
            ("tapsim_repair_bytes", "Bytes moved by finished repairs", self.bytes),
        ):
            family = CounterMetricFamily(name, doc, labels=["result"])
            for result, n in sorted(values.items()):
                family.add_metric([result], n)
            yield family


class NodeMetrics:
    """The registry of one node, and the once-a-second sampler that feeds it."""

    def __init__(self, ports: MetricsPorts) -> None:
        self._ports = ports
        self.registry = CollectorRegistry(auto_describe=False)
        self._repairs = _RepairCounts()
        self.registry.register(_SnapshotCollector(ports, self._repairs))
        ProcessCollector(registry=self.registry)
        self.ack_lag = Histogram(
            "tapsim_ack_lag_seconds",
            "ACK lag of each stream that is up, sampled once a second",
            buckets=ACK_LAG_BUCKETS,
            registry=self.registry,
        )

    def sample(self) -> None:
        for lag in self._ports.ack_lags():
            self.ack_lag.observe(lag or 0.0)
        self._repairs.sample(self._ports.repairs())

    async def run_sampler(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY)


class MetricsServer:
    def __init__(self, metrics: NodeMetrics, server: RunningServer, sampler: asyncio.Task) -> None:
        self.metrics = metrics
        self._server = server
        self._sampler = sampler
        self.port = server.port

    async def stop(self) -> None:
        self._sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sampler
        await self._server.stop()


def _only_metrics(app):
    """``/metrics`` only; anything else is a 404."""

    async def route(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/metrics":
            return await app(scope, receive, send)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"see /metrics\n"})

    return route


async def serve_metrics(ports: MetricsPorts, host: str, port: int) -> MetricsServer:
    """Serve ``http://host:port/metrics`` on the running loop (port 0: a free one)."""
    metrics = NodeMetrics(ports)
    server = await start_server(_only_metrics(make_asgi_app(metrics.registry)), host, port)
    sampler = asyncio.create_task(metrics.run_sampler(), name="metrics sampler")
    return MetricsServer(metrics, server, sampler)
