"""Building well-formed messages: HTML + text, RFC 8058 unsubscribe headers, no header injection."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from datetime import datetime
from email import quoprimime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from urllib.parse import quote

from flask import current_app

from ..infra.smtp import dot_stuff
from ..validation import reject_control_characters
from .dkim import DkimSigner, signer_from_config


def sender_address() -> str:
    return parseaddr(current_app.config["MAIL_FROM"])[1]


def sender_domain() -> str:
    return sender_address().rpartition("@")[2] or "localhost"


def deterministic_message_id(*parts, domain: str | None = None) -> str:
    # A retry of the same message carries the same Message-ID, so receivers can de-duplicate.
    return message_id_maker(domain)(*parts)


def message_id_maker(domain: str | None = None) -> Callable[..., str]:
    """deterministic_message_id for many messages (a digest): the keyed HMAC is set up once.

    Keyed with MESSAGE_ID_KEY (default SECRET_KEY), so another install's digest 1 to its
    subscriber 1 never shares a Message-ID with ours, and nobody can predict ours."""
    config = current_app.config
    return _message_id_maker(config.get("MESSAGE_ID_KEY") or config["SECRET_KEY"], domain or sender_domain())


@lru_cache(maxsize=8)
def _message_id_maker(key: str, domain: str) -> Callable[..., str]:
    # A key of its own, derived from the secret: a Message-ID never reveals an HMAC made for another use.
    derived = hmac.new(key.encode("utf-8"), b"newsletter.message-id", hashlib.sha256).digest()
    keyed = hmac.new(derived, digestmod=hashlib.sha256)

    def make(*parts) -> str:
        mac = keyed.copy()
        mac.update(":".join(map(str, parts)).encode("utf-8"))
        return f"<{mac.hexdigest()[:32]}@{domain}>"

    return make


def message_signer() -> DkimSigner | None:
    """This app's DKIM signer, or None when DKIM is off. Every email kind is signed by it."""
    return signer_from_config(current_app.config, sender_domain())


def outgoing_bytes(message: EmailMessage, now: datetime) -> bytes:
    """A composed message as it goes out: its bytes, DKIM-signed when DKIM is configured."""
    raw = message.as_bytes()
    signer = message_signer()
    return signer.sign(raw, now) if signer else raw


def list_unsubscribe_mailto(token: str) -> str:
    address = current_app.config["LIST_UNSUBSCRIBE_MAILTO"] or f"unsubscribe@{sender_domain()}"
    return f"mailto:{address}?subject={quote('unsubscribe ' + token)}"


_LINE_BREAK = re.compile(r"[\r\n]")


class _MailPolicy(EmailPolicy):
    """SMTP's policy, but List-Unsubscribe is written plain, `<https://...>,` CRLF ` <mailto:...>`:
    the email package makes a field it cannot fold under 78 columns an RFC 2047 encoded-word,
    in which mail clients find no URL."""

    def fold(self, name, value):
        if name.lower() == "list-unsubscribe":
            return list_unsubscribe_field(str(value)).decode("ascii")
        return super().fold(name, value)

    def fold_binary(self, name, value):
        if name.lower() == "list-unsubscribe":
            return list_unsubscribe_field(str(value))
        return super().fold_binary(name, value)


# 7bit: non-ASCII text goes out quoted-printable or base64, never as 8bit, which needs 8BITMIME.
MAIL_POLICY = _MailPolicy(linesep="\r\n", cte_type="7bit")


def list_unsubscribe_field(value: str) -> bytes:
    """`List-Unsubscribe: <a>, <b>` with its CRLF, folded between the URLs (RFC 2369 allows it)."""
    if not value.isascii() or _LINE_BREAK.search(value):
        raise ValueError(f"List-Unsubscribe must be ASCII URLs on one line: {value!r}")
    return ("List-Unsubscribe: " + value.replace(">, <", ">,\r\n <") + "\r\n").encode("ascii")


def build_message(*, to: str, to_name: str | None, subject: str, text: str, html: str,
                  message_id: str, date: datetime, unsubscribe_url: str, unsubscribe_token: str,
                  headers: dict[str, str] | None = None) -> EmailMessage:
    # The SMTP policy refuses CR/LF inside a header value, and we refuse them earlier, at input.
    reject_control_characters("subject", subject)
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["From"] = current_app.config["MAIL_FROM"]
    msg["To"] = _address(to, to_name)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    msg["List-Unsubscribe"] = f"<{unsubscribe_url}>, <{list_unsubscribe_mailto(unsubscribe_token)}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def _address(email: str, name: str | None) -> Address | str:
    if not name:
        return email
    local, _, domain = email.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


# --- Messages as bytes, for bulk mail --------------------------------------------------------
# The email package takes about a millisecond per message; a digest goes to every subscriber.
# These pieces let a digest be written once and personalised by joining pre-encoded bytes. Every
# per-reader value goes through address_line (header) or BodyTemplate.encode (body), which can
# not write a line break into a header; tests compare the result with build_message's.

_SOFT_BREAK = b"=\r\n"  # quoted-printable: the line goes on
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
_PRINTABLE = re.compile(r"[ -~]*")
_QP_LITERAL = re.compile(r"[ -<>-~]*")  # printable ASCII but "=": quoted-printable as it is
_MAX_LINE = 78
_ENCODED_WORD_BYTES = 45  # 60 base64 characters: "=?utf-8?b?...?=" stays under RFC 2047's 75


def is_plain_address(email: str) -> bool:
    """An ASCII dot-atom address, safe to write into a header as it is."""
    return _PLAIN_ADDRESS.fullmatch(email) is not None


def ascii_address(email: str) -> str | None:
    """The address as a plain ASCII one (an internationalised domain in its IDNA form), or None
    when it has none (a non-ASCII local part needs SMTPUTF8)."""
    if is_plain_address(email):
        return email
    local, _, domain = email.rpartition("@")
    try:
        candidate = f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return None
    return candidate if is_plain_address(candidate) else None


def header_line(name: str, value: str) -> bytes:
    """One header field, folded and RFC 2047-encoded by the email package, with its CRLF."""
    return SMTP.header_factory(name, value).fold(policy=SMTP).encode("ascii")


def address_line(field: str, email: str, name: str) -> bytes:
    """`To: "Name" <email>` with CRLF, folded under 78 columns when it can be.

    `email` must pass is_plain_address and `name` must be one line (no control characters, no
    runs of spaces): printable ASCII names become a quoted-string, others RFC 2047 encoded-words.
    """
    if not is_plain_address(email):
        raise ValueError(f"not a plain address: {email!r}")
    prefix = f"{field}: "
    if not name:
        return f"{prefix}{email}\r\n".encode("ascii")
    if _PRINTABLE.fullmatch(name) is None or "=?" in name:
        words = _encoded_words(name)
    else:  # a quoted-string may fold at its spaces (RFC 5322 3.2.4): split there
        words = ('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"').split(" ")
    words.append(f"<{email}>")
    lines, line = [], prefix + words[0]
    for word in words[1:]:
        if len(line) + 1 + len(word) > _MAX_LINE:
            lines.append(line)
            line = " " + word
        else:
            line += " " + word
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _encoded_words(text: str) -> list[str]:
    data = text.encode("utf-8")
    if len(data) <= _ENCODED_WORD_BYTES:
        chunks = [data]
    else:  # split between characters, never inside one
        chunks, current = [], b""
        for char in text:
            encoded = char.encode("utf-8")
            if len(current) + len(encoded) > _ENCODED_WORD_BYTES:
                chunks.append(current)
                current = b""
            current += encoded
        chunks.append(current)
    return [f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=" for chunk in chunks]


def _qp(text: str) -> bytes:
    # Lines of at most 75 characters, so that a soft break ("=") can always follow.
    latin1 = text.encode("utf-8").decode("latin-1")  # body_encode writes each char under 256 as one octet
    return quoprimime.body_encode(latin1, maxlinelen=75, eol="\r\n").encode("ascii")


def _qp_value(value: str) -> bytes:
    if _QP_LITERAL.fullmatch(value) is not None:  # the usual case: nothing to escape
        if len(value) <= 75:
            return value.encode("ascii")
        return _SOFT_BREAK.join(value[i:i + 75].encode("ascii") for i in range(0, len(value), 75))
    return _qp(value)


class BodyTemplate:
    """A rendered body with holes for per-reader values, kept as text and as quoted-printable.

    `placeholder` matches the holes; its one group names the value that fills each. The static
    pieces are encoded once; per reader, each value is encoded and set between soft line breaks.
    """

    def __init__(self, body: str, placeholder: re.Pattern):
        pieces = placeholder.split(body.replace("\r\n", "\n"))
        self.static = pieces[0::2]
        self.fields = pieces[1::2]
        self._encoded_head = _qp(self.static[0])
        self._encoded = [(field, _qp(piece)) for field, piece in zip(self.fields, self.static[1:])]
        # The same pieces as SMTP's DATA carries them. Every piece starts a line (after the part's
        # headers or a soft break), so stuffing piece by piece equals stuffing the whole body.
        self._stuffed_head = dot_stuff(self._encoded_head)
        self._stuffed = [(field, dot_stuff(piece)) for field, piece in self._encoded]

    def fill(self, values: dict[str, str]) -> str:
        parts = [self.static[0]]
        for field, piece in zip(self.fields, self.static[1:]):
            parts.append(values[field])
            parts.append(piece)
        return "".join(parts)

    def encode(self, values: dict[str, str], stuffed: bool = False) -> bytes:
        """The filled-in body, quoted-printable (CRLF lines of at most 76 characters); with
        `stuffed`, with a dot doubled at the start of each line, as SMTP's DATA carries it."""
        return self.join(encoded_values(values), stuffed)

    def join(self, encoded: dict[str, bytes], stuffed: bool = False) -> bytes:
        """encode, from values already quoted-printable (encoded_values)."""
        if stuffed:
            encoded = {field: dot_stuff(value) for field, value in encoded.items()}
            head, pieces = self._stuffed_head, self._stuffed
        else:
            head, pieces = self._encoded_head, self._encoded
        parts = [head]
        for field, piece in pieces:
            parts += (_SOFT_BREAK, encoded[field], _SOFT_BREAK, piece)
        return b"".join(parts)

    def hash_parts(self, key) -> list:
        """join's layout for a DKIM BodyHashTemplate: fixed bytes, and `(key, field)` where a value
        goes. Each value starts a line (after a soft break) and is followed by one ("=")."""
        parts = [self._encoded_head]
        for field, piece in self._encoded:
            parts += (_SOFT_BREAK, (key, field), _SOFT_BREAK + piece)
        return parts


def encoded_values(values: dict[str, str]) -> dict[str, bytes]:
    """Per-reader values as BodyTemplate.join takes them."""
    return {field: _qp_value(value) for field, value in values.items()}


def alternative_head(boundary: str) -> bytes:
    """The last top-level headers of a text + HTML message, and the blank line after them."""
    return (f"MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n"
            f' boundary="{boundary}"\r\n\r\n').encode("ascii")


def alternative_parts(boundary: str) -> tuple[bytes, bytes, bytes]:
    """What goes before the text body, between text and HTML, and after the HTML body."""
    def part(subtype: str) -> str:
        return (f'--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    return (part("plain").encode("ascii"), ("\r\n" + part("html")).encode("ascii"),
            f"\r\n--{boundary}--\r\n".encode("ascii"))
