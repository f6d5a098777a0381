"""Nodes federating over TLS 1.3 + ALPN h2 with a throwaway self-signed certificate.

Verification stays on: a node trusts the certificate only because it is told to
(``NodeConfig.tls_ca`` / ``tapsim node --tls-ca FILE``), and every outgoing
connection — peer streams, repair, key fetches through a hop and their confirmation
at the source — uses that trust. Without it the peer is refused. The certificate is
made with the openssl CLI (the `cryptography` package is not installed in this venv).
"""

from __future__ import annotations

import asyncio
import ssl

import orjson
import pytest

from node.transport import FederationClient
from tests.certs import OPENSSL, make_self_signed
from tests.nodes import start_node, streams_up, summary, wait_until
from tests.test_cli import NodeProcess

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl CLI is not installed")
G = "g!test"
P = "/_taps/federation"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_self_signed(tmp_path_factory.mktemp("tls"), "tapsim-node-test")


def tls(cert, *, trust: bool = True) -> dict:
    return {"tls_cert": cert.cert, "tls_key": cert.key, "tls_ca": cert.cert if trust else None}


async def test_two_nodes_federate_over_tls(tmp_path, cert):
    alice = await start_node(tmp_path, "alice", **tls(cert))
    for i in range(50):
        await alice.publish(G, b"history %d" % i)  # travels by repair (digest, checkpoint)
    bob = await start_node(tmp_path, "bob", peers=[alice.url], **tls(cert))
    try:
        assert alice.url.startswith("https://127.0.0.1:") and bob.url.startswith("https://")
        await wait_until(lambda: streams_up(bob, "alice") and streams_up(alice, "bob"), what="up")
        link = bob.peers.links[alice.url]
        ssl_object = (await link.client.connection()).writer.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.3"
        assert ssl_object.selected_alpn_protocol() == "h2"
        for i in range(20):
            await alice.publish(G, b"live from alice %d" % i)
            await bob.publish(G, b"live from bob %d" % i)
        await wait_until(lambda: summary(alice)[0] == summary(bob)[0] == 90, what="90 at both")
        assert summary(alice) == summary(bob)
        await wait_until(lambda: bob.store.outbox_count("alice", G) == 0, what="bob's outbox")
        # Bob's key document advertises its https URL; alice pinned it from the HELLO.
        assert alice.keystore.document("bob")["url"] == bob.url
    finally:
        await bob.stop()
        await alice.stop()


async def test_relayed_author_key_is_fetched_and_confirmed_over_tls(tmp_path, cert):
    """c verifies a's events relayed by b: a's key comes through b's GET /keys/a and is
    confirmed at a's own https URL, both with the configured trust."""
    a = await start_node(tmp_path, "a", **tls(cert))
    b = await start_node(tmp_path, "b", peers=[a.url], **tls(cert))
    c = await start_node(tmp_path, "c", peers=[b.url], **tls(cert))
    try:
        await wait_until(lambda: streams_up(b, "a") and streams_up(c, "b"), what="chain up")
        for i in range(5):
            await a.publish(G, b"relay me %d" % i)
        await wait_until(lambda: summary(c)[0] == 5, what="a's events at c")
        assert summary(a) == summary(b) == summary(c)
        pin = c.keystore.pin("a")
        assert pin is not None and pin.source == "confirmed", pin
    finally:
        for node in (c, b, a):
            await node.stop()


async def test_an_untrusted_certificate_is_refused(tmp_path, cert):
    alice = await start_node(tmp_path, "alice", **tls(cert))
    bob = await start_node(tmp_path, "bob", peers=[alice.url], **tls(cert, trust=False))
    try:
        link = bob.peers.links[alice.url].links[G]
        await wait_until(lambda: link.last_error is not None, what="a connection error")
        assert "CERTIFICATE_VERIFY_FAILED" in link.last_error, link.last_error
        assert not streams_up(bob, "alice") and alice.counters.streams_accepted == 0
    finally:
        await bob.stop()
        await alice.stop()


async def test_tapsim_node_with_tls_ca_federates(tmp_path, cert):
    alice = await start_node(tmp_path, "alice", **tls(cert, trust=False))
    bob = await NodeProcess.start(
        "--listen", "127.0.0.1:0", "--server-id", "bob", "--data-dir", str(tmp_path / "bob"),
        "--group", G, "--peer", alice.url, "--tls-cert", str(cert.cert),
        "--tls-key", str(cert.key), "--tls-ca", str(cert.cert),
    )  # fmt: skip
    try:
        assert bob.url is not None and bob.url.startswith("https://127.0.0.1:")
        await bob.wait_for_line(r"stream up: alice g!test \(initiator\)", what="bob's stream up")
        await wait_until(lambda: streams_up(alice, "bob"), what="alice sees bob")
        for i in range(10):
            await alice.publish(G, b"to the subprocess %d" % i)
        context = ssl.create_default_context(cafile=str(cert.cert))
        async with FederationClient(bob.url, ssl_context=context) as client:

            async def count() -> int:
                r = await client.request("GET", f"{P}/encrypted-groups/{G}/digest")
                return orjson.loads(r.body)["count"]

            for _ in range(2000):
                if await count() == 10:
                    break
                await asyncio.sleep(0.01)  # polling the subprocess's state
            assert await count() == 10
        code, stderr = await bob.stop()
        assert code == 0 and "Traceback" not in stderr, stderr
    finally:
        await bob.kill()
        await alice.stop()
