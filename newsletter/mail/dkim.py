"""DKIM signatures (RFC 6376) for outgoing mail, when DKIM_SELECTOR, DKIM_DOMAIN and
DKIM_PRIVATE_KEY_PATH are all set. The key is read once per digest, never per message.

dkimpy signs in pure Python (about a millisecond or two per 2048-bit RSA signature): with DKIM on,
signing is most of the per-message cost. Relays that sign themselves (most hosted ones) can leave
these settings empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

log = logging.getLogger(__name__)

# What a receiver must see unchanged: who it is from and to, what it says it is, and the
# unsubscribe headers (RFC 8058 section 4 asks for List-Unsubscribe and List-Unsubscribe-Post).
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"list-id", b"list-unsubscribe",
    b"list-unsubscribe-post", b"feedback-id", b"mime-version", b"content-type",
)


class DkimConfigurationError(ValueError):
    """The DKIM settings name a key that cannot be read or used."""


@dataclass(frozen=True)
class DkimSigner:
    selector: bytes
    domain: bytes
    private_key: bytes  # PEM, PKCS#1 or PKCS#8

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature header in front."""
        signature = dkim.sign(message, self.selector, self.domain, self.private_key,
                              canonicalize=(b"relaxed", b"relaxed"), include_headers=list(SIGNED_HEADERS))
        return signature + message


def signer_from_config(config, from_domain: str) -> DkimSigner | None:
    """A signer when all three settings are set; None (no signing) when none is."""
    selector, domain, path = (config.get(name) for name in ("DKIM_SELECTOR", "DKIM_DOMAIN", "DKIM_PRIVATE_KEY_PATH"))
    if not (selector or domain or path):
        return None
    if not (selector and domain and path):
        raise DkimConfigurationError(
            "DKIM needs DKIM_SELECTOR, DKIM_DOMAIN and DKIM_PRIVATE_KEY_PATH together; only "
            + ", ".join(n for n, v in (("DKIM_SELECTOR", selector), ("DKIM_DOMAIN", domain),
                                       ("DKIM_PRIVATE_KEY_PATH", path)) if v) + " is set.")
    try:
        with open(path, "rb") as file:
            key = file.read().replace(b"\r\n", b"\n")  # dkimpy's PEM reader wants bare newlines
        parse_pem_private_key(key)
    except OSError as error:
        raise DkimConfigurationError(f"Cannot read the DKIM key {path}: {error.strerror}.") from None
    except (UnparsableKeyError, ValueError, IndexError) as error:
        raise DkimConfigurationError(f"The DKIM key {path} is not a PEM RSA private key: {error}") from None
    domain = domain.strip().lower()
    if not (from_domain.lower() == domain or from_domain.lower().endswith("." + domain)):
        # DMARC passes only when the signing domain aligns with the From domain.
        log.warning("DKIM_DOMAIN %s does not align with the From domain %s: DMARC will not pass on DKIM",
                    domain, from_domain)
    return DkimSigner(selector.strip().encode("ascii"), domain.encode("ascii"), key)
