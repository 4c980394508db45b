"""DKIM signatures (RFC 6376) for every outgoing email, RSA and optionally Ed25519 beside it (RFC 8463).

On when DKIM_SELECTOR, DKIM_DOMAIN and DKIM_PRIVATE_KEY_PATH are all set; with
DKIM_ED25519_PRIVATE_KEY_PATH too, each message carries a second signature by that key. Relays that
sign themselves (most hosted ones) can leave these settings empty.

Canonicalisation is relaxed/relaxed. `DkimSigner.signature_lines` is the one place a signature is
made, from canonical header lines and a body hash: `sign` feeds it from any message, and the digest
(mail/digest.py) from pieces it canonicalised once per digest, so a reader's message costs one
SHA-256 pass over its body and one private-key operation per key (the `cryptography` package:
about 0.3 ms for RSA-2048, 0.05 ms for Ed25519).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

log = logging.getLogger(__name__)

# What a receiver must see unchanged: who it is from and to, what it says it is, and the
# unsubscribe headers (RFC 8058 section 4 asks for List-Unsubscribe and List-Unsubscribe-Post).
# Listed even when a message lacks one (a confirmation has no Feedback-ID): then none can be added.
SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"list-id", b"list-unsubscribe",
    b"list-unsubscribe-post", b"feedback-id", b"mime-version", b"content-type",
)
_SIGNED = frozenset(SIGNED_HEADERS)
MIN_RSA_BITS = 1024  # receivers ignore signatures by smaller keys (RFC 8301)

_WSP = re.compile(rb"[ \t]+")
_WSP_AT_LINE_END = re.compile(rb"[ \t]+\r\n")
_EMPTY_LINES_AT_END = re.compile(rb"(?:\r\n)+\Z")
_FIELD = re.compile(rb"[^\r\n]+\r\n(?:[ \t][^\r\n]*\r\n)*")
_DNS_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?")


class DkimConfigurationError(ValueError):
    """The DKIM settings name a key that cannot be read or used."""


# --- relaxed canonicalisation (RFC 6376 3.4.2 and 3.4.4) ----------------------------------------


def relaxed_header(field: bytes) -> bytes:
    """One header field as written (folded, with its CRLF) in relaxed form: `name:value` CRLF."""
    name, _, value = field.partition(b":")
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_lines(chunk: bytes) -> bytes:
    """The line rules of the relaxed body: no space before a line break, runs of space as one.
    Exact for a chunk of a body cut where no run of space crosses the cut, which every cut
    right after a CRLF, or next to a byte that is neither space nor CR, is."""
    if b"\t" not in chunk and b"  " not in chunk and b" \r\n" not in chunk:
        return chunk  # the usual value (an address, a token, a name): nothing to change
    return _WSP.sub(b" ", _WSP_AT_LINE_END.sub(b"\r\n", chunk))


def relaxed_body(body: bytes) -> bytes:
    body = _EMPTY_LINES_AT_END.sub(b"\r\n", relaxed_lines(body))
    if body == b"\r\n":
        return b""
    return body if not body or body.endswith(b"\r\n") else body + b"\r\n"


def canonical_headers(head: bytes) -> dict[bytes, bytes]:
    """The signed fields of a header block, relaxed, by lower-case name; the last one of a name
    wins, as a verifier reads them from the bottom up."""
    found = {}
    for field in _FIELD.findall(head if head.endswith(b"\r\n") else head + b"\r\n"):
        name = field.partition(b":")[0].rstrip(b" \t").lower()
        if name in _SIGNED:
            found[name] = relaxed_header(field)
    return found


class BodyHashTemplate:
    """The body hash of messages that share a body but for values set between fixed bytes.

    `parts` alternate fixed bytes and keys of per-message values. The fixed parts are
    canonicalised once; a message canonicalises only its values. A value must start a line (the
    fixed bytes before it end with CRLF) and the fixed bytes after it must not start with space
    or CR: then no line rule crosses a cut, and canonicalising piece by piece is exact."""

    def __init__(self, parts: Sequence[bytes | object]):
        merged: list = []
        for part in parts:
            if isinstance(part, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] += part
            elif not (isinstance(part, bytes) and not part):
                merged.append(part)
        for before, after in zip(merged, merged[1:]):
            if not isinstance(before, bytes) and not isinstance(after, bytes):
                raise ValueError("two values with no fixed bytes between them")
            if not isinstance(before, bytes) and after[:1] in (b" ", b"\t", b"\r"):
                raise ValueError("fixed bytes after a value start with space or CR")
            if not isinstance(after, bytes) and not before.endswith(b"\r\n"):
                raise ValueError("a value does not start a line")
        merged = [relaxed_lines(part) if isinstance(part, bytes) else part for part in merged]
        if not merged or not isinstance(merged[-1], bytes) or not merged[-1].endswith(b"\r\n") \
                or merged[-1].endswith(b"\r\n\r\n") or merged[-1] == b"\r\n":
            raise ValueError("the body must end with fixed bytes and one line break, after a line with text")
        first = merged.pop(0) if isinstance(merged[0], bytes) else b""
        self._opening = hashlib.sha256(first)
        self._rest = list(zip(merged[0::2], merged[1::2]))

    def digest(self, values: Mapping[object, bytes]) -> bytes:
        body = self._opening.copy()
        for key, fixed in self._rest:
            body.update(relaxed_lines(values[key]))
            body.update(fixed)
        return body.digest()


# --- keys and signatures --------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimKey:
    algorithm: bytes  # the a= tag
    selector: bytes
    sign: Callable[[bytes], bytes]  # the header data to sign -> the signature


def rsa_key(selector: bytes, private_key: rsa.RSAPrivateKey) -> DkimKey:
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()

    def sign(data: bytes) -> bytes:
        return private_key.sign(data, pkcs1, sha256)
    return DkimKey(b"rsa-sha256", selector, sign)


def ed25519_key(selector: bytes, private_key: ed25519.Ed25519PrivateKey) -> DkimKey:
    def sign(data: bytes) -> bytes:  # RFC 8463: Ed25519 signs the SHA-256 of the header data
        return private_key.sign(hashlib.sha256(data).digest())
    return DkimKey(b"ed25519-sha256", selector, sign)


def _fold(tags: list[bytes], first: int) -> bytes:
    """Words joined by spaces, folded (CRLF and a space) before a word that would pass column 78."""
    lines, line = [], b""
    for tag in tags:
        room = 78 - (first if not lines else 0)
        if line and len(line) + 1 + len(tag) > room:
            lines.append(line)
            line = b" " + tag
        else:
            line = line + b" " + tag if line else tag
    return b"\r\n".join(lines + [line])


class DkimSigner:
    def __init__(self, domain: bytes, keys: Sequence[DkimKey]):
        self.domain = domain
        self.keys = tuple(keys)
        signed = [name + (b" :" if i < len(SIGNED_HEADERS) - 1 else b";") for i, name in enumerate(SIGNED_HEADERS)]
        # Per key: the tags before t=, and h= (folded once, as it never changes).
        self._heads = [_fold([b"v=1;", b"a=" + key.algorithm + b";", b"c=relaxed/relaxed;", b"d=" + domain + b";",
                              b"s=" + key.selector + b";"], len(b"DKIM-Signature: ")) for key in self.keys]
        self._signed_headers = b"\r\n " + _fold([b"h=" + signed[0]] + signed[1:], 1)

    def signature_lines(self, headers: Mapping[bytes, bytes], body_hash: bytes, now: datetime) -> bytes:
        """The DKIM-Signature fields (one per key) for a message whose signed header fields, in
        relaxed form by lower-case name, are `headers` and whose relaxed body hashes to `body_hash`."""
        data = b"".join(headers.get(name, b"") for name in SIGNED_HEADERS)
        tail = b"\r\n t=%d;" % int(now.timestamp()) + self._signed_headers + b"\r\n bh=" \
            + base64.b64encode(body_hash) + b";\r\n b="
        lines = []
        for key, head in zip(self.keys, self._heads):
            unsigned = b"DKIM-Signature: " + head + tail
            # The signature's own field is hashed last, with b= empty and no CRLF at its end.
            value = base64.b64encode(key.sign(data + relaxed_header(unsigned)[:-2]))
            lines.append(unsigned + b"\r\n ".join(value[i:i + 74] for i in range(0, len(value), 74)) + b"\r\n")
        return b"".join(lines)

    def sign(self, message: bytes, now: datetime) -> bytes:
        """The message (CRLF lines, as sent) with its DKIM-Signature fields in front."""
        head, blank, body = message.partition(b"\r\n\r\n")
        if not blank:
            raise ValueError("a message without a blank line after its header")
        signature = self.signature_lines(canonical_headers(head), hashlib.sha256(relaxed_body(body)).digest(), now)
        return signature + message


# --- from the settings ----------------------------------------------------------------------------


def signer_from_config(config, from_domain: str) -> DkimSigner | None:
    """A signer when the three RSA settings are set (with the Ed25519 key beside it when that is
    set too); None (no signing) when none is. Keys are read again only when their file changes."""
    selector, domain, path = (config.get(name) for name in ("DKIM_SELECTOR", "DKIM_DOMAIN", "DKIM_PRIVATE_KEY_PATH"))
    ed_path = config.get("DKIM_ED25519_PRIVATE_KEY_PATH")
    if not (selector or domain or path):
        if ed_path:
            raise DkimConfigurationError("DKIM_ED25519_PRIVATE_KEY_PATH signs beside the RSA key: set "
                                         "DKIM_SELECTOR, DKIM_DOMAIN and DKIM_PRIVATE_KEY_PATH too.")
        return None
    if not (selector and domain and path):
        raise DkimConfigurationError(
            "DKIM needs DKIM_SELECTOR, DKIM_DOMAIN and DKIM_PRIVATE_KEY_PATH together; only "
            + ", ".join(n for n, v in (("DKIM_SELECTOR", selector), ("DKIM_DOMAIN", domain),
                                       ("DKIM_PRIVATE_KEY_PATH", path)) if v) + " is set.")
    selector = selector.strip()
    ed_selector = (config.get("DKIM_ED25519_SELECTOR") or f"{selector}-ed25519").strip()
    for name, value in (("DKIM_SELECTOR", selector), ("DKIM_DOMAIN", domain), ("DKIM_ED25519_SELECTOR", ed_selector)):
        if not _DNS_NAME.fullmatch(value.strip()):
            raise DkimConfigurationError(f"{name} must be a DNS name (letters, digits, dots, hyphens): {value!r}.")
    if ed_path and ed_selector == selector:
        raise DkimConfigurationError("DKIM_ED25519_SELECTOR must differ from DKIM_SELECTOR: each key has "
                                     "its own DNS record (<selector>._domainkey.<domain>).")
    return _signer(selector, domain.strip().lower(), _file_version(path),
                   (ed_selector, _file_version(ed_path)) if ed_path else None, from_domain.lower())


def _file_version(path: str) -> tuple[str, int, int]:
    try:
        stat = os.stat(path)
    except OSError as error:
        raise DkimConfigurationError(f"Cannot read the DKIM key {path}: {error.strerror}.") from None
    return path, stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=8)
def _signer(selector: str, domain: str, rsa_file: tuple, ed25519_file: tuple | None, from_domain: str) -> DkimSigner:
    keys = [rsa_key(selector.encode("ascii"), _load_rsa(rsa_file[0]))]
    if ed25519_file:
        keys.append(ed25519_key(ed25519_file[0].encode("ascii"), _load_ed25519(ed25519_file[1][0])))
    if not (from_domain == domain or from_domain.endswith("." + domain)):
        # DMARC passes only when the signing domain aligns with the From domain.
        log.warning("DKIM_DOMAIN %s does not align with the From domain %s: DMARC will not pass on DKIM",
                    domain, from_domain)
    return DkimSigner(domain.encode("ascii"), keys)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise DkimConfigurationError(f"Cannot read the DKIM key {path}: {error.strerror}.") from None


def _load_pem(path: str, kind: str):
    try:
        return serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise DkimConfigurationError(f"The DKIM key {path} is not a PEM {kind} private key: {error}") from None


def _load_rsa(path: str) -> rsa.RSAPrivateKey:
    key = _load_pem(path, "RSA")  # PKCS#1 ("BEGIN RSA PRIVATE KEY") or PKCS#8
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimConfigurationError(f"The DKIM key {path} is not a PEM RSA private key: it is {type(key).__name__}.")
    if key.key_size < MIN_RSA_BITS:
        raise DkimConfigurationError(f"The DKIM key {path} has {key.key_size} bits: receivers ignore "
                                     f"RSA keys under {MIN_RSA_BITS} bits (use 2048).")
    return key


def _load_ed25519(path: str) -> ed25519.Ed25519PrivateKey:
    raw = _read(path)
    if b"-----BEGIN" not in raw:  # dkimpy's dknewkey writes the base64 of the 32-byte seed
        try:
            return ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw.strip(), validate=True))
        except ValueError as error:
            raise DkimConfigurationError(f"The DKIM key {path} is not an Ed25519 private key: {error}") from None
    key = _load_pem(path, "Ed25519")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimConfigurationError(f"The DKIM key {path} is not a PEM Ed25519 private key: "
                                     f"it is {type(key).__name__}.")
    return key
