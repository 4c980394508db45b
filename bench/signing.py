"""DKIM for the digest bench: a fresh RSA-2048 key, the settings that make the workers sign with
it, and dkimpy's verdict on a message signed by it (the TXT record served by a lookup function)."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SELECTOR = "bench"


class BenchKey:
    def __init__(self, directory: Path, domain: str):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.path = directory / "dkim-rsa.pem"
        self.path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        self.domain = domain
        self.record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def settings(self) -> dict[str, str]:
        return {"DKIM_SELECTOR": SELECTOR, "DKIM_DOMAIN": self.domain, "DKIM_PRIVATE_KEY_PATH": str(self.path)}

    def verifies(self, message: bytes) -> bool:
        import dkim  # dkimpy, a development requirement: an implementation that is not ours

        name = f"{SELECTOR}._domainkey.{self.domain}.".encode()
        return message.startswith(b"DKIM-Signature:") and dkim.verify(
            message, dnsfunc=lambda asked, timeout=5: self.record if asked == name else None)
