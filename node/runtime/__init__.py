"""The running node: asyncio wiring of protocol, sync, storage and transport.

``node`` composes the parts and owns their lifecycle; each part receives only the
narrow ports it uses. One stream is a ``stream_runner``; configured peers are
``links``; anti-entropy over HTTP is ``repair``; author keys through a hop are
``keyfetch``; the seed file is ``seed_file``; ``config`` is what a node is told.
"""
