"""End-to-end encryption of test events, in the client layer above the node.

The node only ever relays ciphertext (PROTOCOL.md §4.3); group keys live here, in
the dashboard, derived from a passphrase the operator shares out of band. Every
client that knows the passphrase derives the same key: argon2id with a salt fixed
by the group id (so no salt has to travel), then NaCl secretbox with a fresh
random nonce per message, written in front of the box.

Deriving a key costs a fraction of a second and 64 MiB on purpose, so keys are
derived once per (group, passphrase) and cached, and callers on the UI thread use
`Keyring.ready()` (never blocks) while a worker calls `Keyring.cipher()`.
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE  # 32
NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE  # 24


def group_salt(group_id: str) -> bytes:
    """The argon2id salt of a group: the first 16 bytes of SHA-256(group id)."""
    return hashlib.sha256(group_id.encode()).digest()[: nacl.pwhash.argon2id.SALTBYTES]


@lru_cache(maxsize=64)
def _derive_key(group_id: str, passphrase: str) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        KEY_SIZE,
        passphrase.encode(),
        group_salt(group_id),
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    )


class GroupCipher:
    """Seals and opens the content of one group's events."""

    __slots__ = ("_box", "group_id")

    def __init__(self, group_id: str, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a group key is {KEY_SIZE} bytes, not {len(key)}")
        self.group_id = group_id
        self._box = nacl.secret.SecretBox(key)

    @classmethod
    def from_passphrase(cls, group_id: str, passphrase: str) -> GroupCipher:
        return cls(group_id, _derive_key(group_id, passphrase))

    def encrypt(self, plaintext: str, *, nonce: bytes | None = None) -> bytes:
        """24-byte nonce followed by the box. `nonce` is for deterministic fixtures only."""
        if nonce is None:
            nonce = nacl.utils.random(NONCE_SIZE)
        return bytes(self._box.encrypt(plaintext.encode(), nonce))

    def decrypt(self, ciphertext: bytes) -> str | None:
        """The text, or None when it was not sealed under this key (or is not UTF-8)."""
        if len(ciphertext) < NONCE_SIZE + nacl.secret.SecretBox.MACBYTES:
            return None
        try:
            return self._box.decrypt(ciphertext).decode()
        except (nacl.exceptions.CryptoError, UnicodeDecodeError):
            return None


class Keyring:
    """The dashboard's passphrases and the ciphers derived from them, thread-safe."""

    def __init__(self, passphrases: dict[str, str] | None = None) -> None:
        self._passphrases = dict(passphrases or {})
        self._ciphers: dict[str, GroupCipher] = {}
        self._lock = threading.Lock()

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self._passphrases)

    def has_passphrase(self, group_id: str) -> bool:
        return group_id in self._passphrases

    def problem(self, group_id: str) -> str | None:
        """What is wrong with the group's passphrase, in words; None when it is usable."""
        value = self._passphrases.get(group_id)
        if value is None:
            return f"no passphrase for {group_id}"
        if not isinstance(value, str) or not value:
            return (
                f"the passphrase for {group_id} in the config is not text "
                f"({type(value).__name__}): write it in quotes"
            )
        return None

    def set_passphrase(self, group_id: str, passphrase: str) -> None:
        """Use `passphrase` for the group from now on (in memory only)."""
        with self._lock:
            self._passphrases[group_id] = passphrase
            self._ciphers.pop(group_id, None)

    def ready(self, group_id: str) -> GroupCipher | None:
        """The cipher if it has been derived already; never blocks."""
        return self._ciphers.get(group_id)

    def cipher(self, group_id: str) -> GroupCipher | None:
        """The cipher for a group, deriving it now if needed (slow: call from a worker)."""
        cipher = self._ciphers.get(group_id)
        if cipher is not None or group_id not in self._passphrases:
            return cipher
        with self._lock:
            cipher = self._ciphers.get(group_id)
            if cipher is None:
                cipher = GroupCipher.from_passphrase(group_id, self._passphrases[group_id])
                self._ciphers[group_id] = cipher
        return cipher

    def derive_all(self) -> None:
        for group_id in self._passphrases:
            self.cipher(group_id)
