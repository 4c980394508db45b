"""DKIM keys for tests (RSA-2048 and Ed25519), and the check of every signature of a message by
dkimpy, an implementation that is not ours, with a DNS lookup that serves the test public keys."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

DOMAIN = "news.example.org"
RSA_SELECTOR = "mail"
ED25519_SELECTOR = "mail-ed25519"


@dataclass
class DkimKeys:
    rsa_path: Path
    ed25519_path: Path
    records: dict[bytes, bytes]  # "selector._domainkey.domain." -> TXT record
    lookups: list[bytes]

    def settings(self, ed25519: bool = True) -> dict:
        """App settings that sign with the RSA key, and the Ed25519 key beside it."""
        settings = {"DKIM_SELECTOR": RSA_SELECTOR, "DKIM_DOMAIN": DOMAIN, "DKIM_PRIVATE_KEY_PATH": str(self.rsa_path)}
        if ed25519:
            settings["DKIM_ED25519_PRIVATE_KEY_PATH"] = str(self.ed25519_path)
        return settings

    def dns(self, name: bytes, timeout: int = 5) -> bytes | None:
        self.lookups.append(name)
        return self.records.get(name)

    def verified(self, raw: bytes) -> list[str]:
        """The algorithms of the message's DKIM signatures, top first, each verified by dkimpy
        (dkim.verify checks the first; DKIM.verify(idx=...) each of them)."""
        count = len(re.findall(rb"^DKIM-Signature:", raw, re.IGNORECASE | re.MULTILINE))
        assert count == 0 or dkim.verify(raw, dnsfunc=self.dns), "the first DKIM signature does not verify"
        algorithms = []
        for index in range(count):
            verifier = dkim.DKIM(raw)
            assert verifier.verify(idx=index, dnsfunc=self.dns), f"DKIM signature {index} does not verify"
            algorithms.append(verifier.signature_fields[b"a"].decode("ascii"))
        return algorithms


    def verifies(self, raw: bytes, index: int) -> bool:
        """Whether dkimpy verifies signature `index` (a mismatch it raises for is a no too)."""
        try:
            return dkim.DKIM(raw).verify(idx=index, dnsfunc=self.dns)
        except dkim.DKIMException:
            return False


def make_keys(directory: Path) -> DkimKeys:
    directory.mkdir(parents=True, exist_ok=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_path = directory / "dkim-rsa.pem"
    rsa_path.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,  # "BEGIN RSA PRIVATE KEY", as genrsa
                                               serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    rsa_public = rsa_key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_path = directory / "dkim-ed25519.pem"
    ed_path.write_bytes(ed_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    ed_public = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    records = {
        f"{RSA_SELECTOR}._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public),
        f"{ED25519_SELECTOR}._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_public),
    }
    return DkimKeys(rsa_path, ed_path, records, [])
