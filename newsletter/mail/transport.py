"""Talking to an SMTP relay, and telling temporary failures (4xx, dropped line) from permanent ones."""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from ..errors import PermanentMailError, TransientMailError

SCHEMES = {"smtp": (25, False, False), "smtps": (465, True, False), "smtp+starttls": (587, False, True)}


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> Relay:
    """`smtp://host:port`, `smtps://` (TLS from the start) or `smtp+starttls://`, with user:password@."""
    parts = urlsplit(url.strip())
    if parts.scheme not in SCHEMES:
        raise ValueError(f"SMTP_URL must start with one of {', '.join(s + '://' for s in SCHEMES)}: {url!r}")
    if not parts.hostname:
        raise ValueError(f"SMTP_URL has no host: {url!r}")
    default_port, implicit_tls, starttls = SCHEMES[parts.scheme]
    return Relay(
        host=parts.hostname,
        port=parts.port or default_port,
        implicit_tls=implicit_tls,
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def parse_smtp_urls(value: str) -> list[Relay]:
    """SMTP_URL may list several relays, comma-separated: the next is used when one is down."""
    relays = [parse_smtp_url(part) for part in value.split(",") if part.strip()]
    if not relays:
        raise ValueError("SMTP_URL is empty")
    return relays


def _classify(exc: Exception) -> Exception:
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code = next(iter(exc.recipients.values()))[0]
    if code is not None and 500 <= code < 600:
        return PermanentMailError(f"relay refused: {code} {_reply_text(exc)}", code=code)
    # 4xx, a dropped line, a timeout, a refused connection: all worth another try later.
    return TransientMailError(f"{type(exc).__name__}: {code or ''} {_reply_text(exc)}".strip())


def _reply_text(exc: Exception) -> str:
    text = getattr(exc, "smtp_error", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = next(iter(exc.recipients.values()))[1]
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text if text is not None else exc)[:300]


class SmtpConnection:
    """One open connection to a relay, reused for many messages; fails over to the next relay."""

    def __init__(self, relays: Relay | list[Relay], timeout: float = 30.0, local_hostname: str | None = None):
        self.relays = [relays] if isinstance(relays, Relay) else list(relays)
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None
        self._current = 0  # the relay that worked last is tried first

    @property
    def relay(self) -> Relay:
        return self.relays[self._current]

    def open(self) -> None:
        errors = []
        for offset in range(len(self.relays)):
            index = (self._current + offset) % len(self.relays)
            try:
                self._smtp = self._connect(self.relays[index])
                self._current = index
                return
            except (TransientMailError, PermanentMailError) as error:
                errors.append(f"{self.relays[index].host}:{self.relays[index].port}: {error}")
        raise TransientMailError("no relay reachable: " + "; ".join(errors))

    def _connect(self, relay: Relay) -> smtplib.SMTP:
        try:
            if relay.implicit_tls:
                smtp = smtplib.SMTP_SSL(relay.host, relay.port, timeout=self.timeout,
                                        local_hostname=self.local_hostname,
                                        context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(relay.host, relay.port, timeout=self.timeout,
                                    local_hostname=self.local_hostname)
            if relay.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if relay.username:
                smtp.login(relay.username, relay.password or "")
        except (smtplib.SMTPException, OSError) as exc:
            raise _classify(exc) from exc
        return smtp

    def send(self, message: EmailMessage | bytes, sender: str, recipient: str) -> None:
        if self._smtp is None:
            self.open()
        raw = message if isinstance(message, bytes) else message.as_bytes()
        try:
            self._smtp.sendmail(sender, [recipient], raw)
        except UnicodeEncodeError as exc:  # a non-ASCII address, and we never negotiate SMTPUTF8
            self._reset()
            raise PermanentMailError(f"address needs SMTPUTF8: {recipient!r}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            error = _classify(exc)
            if isinstance(error, TransientMailError) or isinstance(exc, smtplib.SMTPServerDisconnected):
                self.close()  # the session state is unknown now; start clean next time
            else:
                self._reset()
            raise error from exc

    def _reset(self) -> None:
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError, socket.error):
            smtp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
