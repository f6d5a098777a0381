"""A throwaway self-signed certificate for TLS tests, made with the openssl CLI.

The `cryptography` package is not a dependency, and openssl is on every machine the
tests run on; where it is not, the TLS tests skip and say why.
"""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
from pathlib import Path
from types import SimpleNamespace

OPENSSL = shutil.which("openssl")


def make_self_signed(directory: Path, common_name: str = "tapsim-test") -> SimpleNamespace:
    """cert and key PEM files for 127.0.0.1 and localhost, and the cert's SHA-256 pin."""
    assert OPENSSL is not None, "openssl CLI is not installed"
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={common_name}",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return SimpleNamespace(cert=cert, key=key, sha256=hashlib.sha256(der).hexdigest())
