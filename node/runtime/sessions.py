"""New stream sessions, configured from the node's settings and identity.

Every stream of the node, in either role, starts from here: the session gets our HELLO
maker (signed with our identity, advertising our limits), the HELLO authenticator, and
the frame log's observer when the dashboard records frames.
"""

from __future__ import annotations

import time

from ulid import ULID

from node.protocol.frames import Frame
from node.protocol.identity import Identity
from node.protocol.ids import format_rfc3339
from node.protocol.keystore import HelloAuthenticator
from node.protocol.session import Role, SessionConfig, StreamSession
from node.runtime.config import NodeConfig
from node.runtime.federation import CAPABILITIES
from node.view.framelog import FrameLog
from node.view.trace import TraceLog


class SessionFactory:
    def __init__(
        self,
        config: NodeConfig,
        identity: Identity,
        hello_auth: HelloAuthenticator,
        frame_log: FrameLog | None,
        traces: TraceLog | None = None,
    ) -> None:
        self._config = config
        self._identity = identity
        self._hello_auth = hello_auth
        self._frame_log = frame_log
        self._traces = traces

    def new(self, group_id: str, role: Role, peer_id: str | None) -> StreamSession:
        """A session for one stream; an initiator names the peer it expects."""
        config, identity = self._config, self._identity
        observer = (
            self._frame_log.observer(lambda: session.peer_id, group_id)
            if self._frame_log is not None
            else None
        )
        if self._traces is not None:
            observer = self._traces.observer(
                lambda: session.peer_id, group_id, role.value, then=observer
            )
        expect = peer_id if role is Role.INITIATOR else None

        def make_hello(to: str, now: float) -> Frame:
            return identity.make_hello(
                to=to,
                group_id=group_id,
                frame_id=str(ULID.from_timestamp(now)),
                timestamp=format_rfc3339(now),
                max_message_size=config.max_message_size,
                ping_interval_ms=int(config.ping_interval * 1000),
                capabilities=CAPABILITIES,
                supported_groups=config.supported_groups,
            )

        def authenticate(frame: Frame, now: float) -> object:
            return self._hello_auth(frame, now, expect)

        session = StreamSession(
            SessionConfig(
                server_id=identity.server_id,
                group_id=group_id,
                role=role,
                peer_id=peer_id,
                max_message_size=config.max_message_size,
                ping_interval=config.ping_interval,
                initial_credit_events=config.initial_credit_events,
                initial_credit_bytes=config.initial_credit_bytes,
                frame_observer=observer,
            ),
            make_hello=make_hello,
            authenticate=authenticate,
            now=time.time(),
        )
        return session
