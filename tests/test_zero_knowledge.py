"""Zero knowledge: nodes carry group content they cannot read (PROTOCOL §4.3, issue 7).

The dashboard's client layer (tapsim_tui/e2e.py) holds the group passphrase and the key
derived from it; it hands its own node only ciphertext, exactly as the dashboard does
(``PublishEvent(group, cipher.encrypt(text))``). That node federates with a second node,
a `tapsim node` process, through a recording proxy. Afterwards neither node's files nor
any byte the second node's process received contain the passphrase, the key (raw, hex
or base64) or any plaintext; and what the second node stored opens with the client's key
and with no other.
"""

from __future__ import annotations

import base64

from node.runtime.federation import CAPABILITIES
from node.view.commands import PublishEvent
from tapsim_tui.e2e import GroupCipher, Keyring, _derive_key
from tests.chaosproxy import ChaosProxy
from tests.nodes import start_node, streams_up, summary, wait_until
from tests.procnodes import ProcNode, db_rows

GROUP = "g!secret"
PASSPHRASE = "correct horse battery staple, federated"
TEXTS = [f"meet at the usual place, note {i} — ünïcödé" for i in range(40)]


def secrets_of(key: bytes) -> dict[str, bytes]:
    return {
        "passphrase": PASSPHRASE.encode(),
        "key": key,
        "key hex": key.hex().encode(),
        "key base64": base64.b64encode(key),
        "key base64url": base64.urlsafe_b64encode(key).rstrip(b"="),
        **{f"plaintext {i}": t.encode() for i, t in enumerate(TEXTS)},
        "plaintext fragment": b"meet at the usual place",
    }


def leaks(blob: bytes, secrets: dict[str, bytes]) -> list[str]:
    return [name for name, value in secrets.items() if value in blob]


def files_under(path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


async def test_nodes_never_receive_the_passphrase_or_key_and_store_only_ciphertext(tmp_path):
    keyring = Keyring({GROUP: PASSPHRASE})  # the dashboard's client layer
    cipher = keyring.cipher(GROUP)
    key = _derive_key(GROUP, PASSPHRASE)  # only to look for it; no node is ever given it
    secrets = secrets_of(key)

    remote = ProcNode(tmp_path, "remote", groups=(GROUP,))
    await remote.start()
    proxy = await ChaosProxy.to(remote.url)
    proxy.record = True  # every byte the remote process receives
    home = await start_node(tmp_path, "home", groups=(GROUP,), peers=[proxy.url])
    try:
        await wait_until(lambda: streams_up(home, "remote", GROUP), what="home → remote up")
        for text in TEXTS:
            home.execute(PublishEvent(group_id=GROUP, ciphertext=cipher.encrypt(text)))
        await wait_until(lambda: summary(home, GROUP)[0] == len(TEXTS), what="published")
        await wait_until(
            lambda: home.store.outbox_count("remote", GROUP) == 0, what="remote stored all"
        )
    finally:
        await home.stop()
        await proxy.close()
        await remote.stop()
        remote.cleanup()

    received = bytes(proxy.recorded)
    assert len(received) > 40 * 100  # the events did travel through the proxy
    assert b"EVENT" in received and b'"ciphertext"' in received
    assert leaks(received, secrets) == []
    assert leaks(files_under(remote.data_dir), secrets) == []
    assert leaks(files_under(home.config.data_dir), secrets) == []
    assert leaks("\n".join(remote.lines).encode(), secrets) == []
    assert "decrypt" not in " ".join(CAPABILITIES)

    # What the remote stored is ciphertext: it opens with the client's key only.
    rows = db_rows(remote.db_path, GROUP)
    assert len(rows) == len(TEXTS)
    opened = sorted(cipher.decrypt(bytes(row[3])) for row in rows)
    assert opened == sorted(TEXTS)
    stranger = GroupCipher.from_passphrase(GROUP, "a guess")
    elsewhere = GroupCipher.from_passphrase("g!other", PASSPHRASE)  # same words, other group
    for row in rows:
        assert stranger.decrypt(bytes(row[3])) is None
        assert elsewhere.decrypt(bytes(row[3])) is None
