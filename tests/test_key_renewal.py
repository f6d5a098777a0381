"""A long-running node re-signs its key document before it expires (§3.2 renewal)."""

from __future__ import annotations

import time

from node.protocol.ids import parse_rfc3339
from tests.nodes import start_node


async def test_the_daily_check_renews_a_document_near_expiry(tmp_path):
    node = await start_node(tmp_path, "alice")
    try:
        node.identity._valid_until_ts = time.time() + 3600  # an hour of validity left
        node._renew_key()
        doc = node.identity.key_document().to_dict()
        assert parse_rfc3339(doc["valid_until"]) > time.time() + 300 * 86400
        assert node.keystore.document("alice") == doc  # our own pin follows the renewal
        assert any("key document renewed" in line for line in node.log.lines)
    finally:
        await node.stop()
