"""https:// peers: TLS 1.3 with ALPN h2, certificate verification on, optional pin.

The throwaway self-signed certificate is made with the openssl CLI (the `cryptography`
package is not installed in this venv).
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
from support.echo import EchoHandler

from node.transport import (
    FRAME_MEDIA_TYPE,
    FederationApp,
    FederationClient,
    TransportError,
    start_server,
)
from tests.certs import OPENSSL, make_self_signed

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl CLI is not installed")
WAIT = 20.0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_self_signed(tmp_path_factory.mktemp("tls"), "tapsim-test")


@pytest.fixture
async def tls_server(certificate):
    handler = EchoHandler()
    server = await start_server(
        FederationApp(handler), "127.0.0.1", 0, certfile=certificate.cert, keyfile=certificate.key
    )
    yield server
    await server.stop()


async def test_pinned_self_signed_certificate(tls_server, certificate):
    assert tls_server.url.startswith("https://127.0.0.1:")
    client = FederationClient(tls_server.url, pinned_cert_sha256=certificate.sha256)
    try:
        r = await client.request("GET", "/_taps/federation/caps")
        assert r.status == 200
        tls = (await client.connection()).writer.get_extra_info("ssl_object")
        assert tls.version() == "TLSv1.3"
        assert tls.selected_alpn_protocol() == "h2"
        # Full duplex works over TLS too.
        stream = await client.open_stream(
            "/_taps/federation/encrypted-groups/g!greet/stream",
            [("content-type", FRAME_MEDIA_TYPE)],
        )
        assert await asyncio.wait_for(stream.read(), WAIT) == b'{"hello":"g!greet"}\n'
        stream.end()
        assert await asyncio.wait_for(stream.read(), WAIT) is None
    finally:
        await client.close()


async def test_verification_against_a_trusted_ca(tls_server, certificate):
    context = ssl.create_default_context(cafile=certificate.cert)
    client = FederationClient(tls_server.url, ssl_context=context)
    try:
        assert (await client.request("GET", "/_taps/federation/caps")).status == 200
    finally:
        await client.close()


async def test_unverifiable_certificate_is_refused(tls_server):
    client = FederationClient(tls_server.url)  # system CAs only: self-signed must fail
    with pytest.raises(TransportError) as info:
        await client.request("GET", "/_taps/federation/caps")
    assert tls_server.url in str(info.value)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


async def test_wrong_pin_is_refused(tls_server):
    client = FederationClient(tls_server.url, pinned_cert_sha256="00" * 32)
    with pytest.raises(TransportError, match="does not match the pin"):
        await client.request("GET", "/_taps/federation/caps")


async def test_server_refuses_tls_1_2(tls_server):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _, writer = await asyncio.open_connection("127.0.0.1", tls_server.port, ssl=context)
        writer.close()


async def test_bad_certificate_files_fail_at_start(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        await start_server(
            FederationApp(EchoHandler()), "127.0.0.1", 0, certfile=str(bogus), keyfile=str(bogus)
        )
