"""The SMTP client: one reused connection to a relay (with failover), temporary failures (4xx,
dropped line) told from permanent ones (5xx)."""

from __future__ import annotations

import re
import select
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from .. import metrics
from ..errors import PermanentMailError, TransientMailError

SCHEMES = {"smtp": (25, False, False), "smtps": (465, True, False), "smtp+starttls": (587, False, True)}

# Relays hang up on idle connections (Postfix after 300 s, some after 60 or less): before a message, a
# goodbye already on the line is looked for (a zero-wait poll), and after this long unused, NOOP asks.
IDLE_NOOP_SECONDS = 30.0


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


def connection_from_config(config) -> SmtpConnection:
    """The connection the app's settings name (SMTP_URL, SMTP_TIMEOUT); it opens on its first send."""
    return SmtpConnection(parse_smtp_urls(config["SMTP_URL"]), timeout=config["SMTP_TIMEOUT"])


def _reply_code(exc: Exception) -> int | None:
    """The relay's reply code behind a failure; None for a dropped line or a refused connection."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return next(iter(exc.recipients.values()))[0]
    return getattr(exc, "smtp_code", None)


def _classify(exc: Exception) -> Exception:
    code = _reply_code(exc)
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


_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x20<>]")


def _envelope(sender: str, recipient: str, size: int | None) -> tuple[bytes, bytes, bytes]:
    """The MAIL, RCPT and DATA commands for one bare address each (ASCII: UnicodeEncodeError else)."""
    for address in (sender, recipient):
        if _UNSAFE_IN_ADDRESS.search(address):
            raise PermanentMailError(f"not an address to put in an SMTP command: {address!r}")
    mail = b"MAIL FROM:<" + sender.encode("ascii") + (b"> SIZE=%d\r\n" % size if size is not None else b">\r\n")
    return mail, b"RCPT TO:<" + recipient.encode("ascii") + b">\r\n", b"DATA\r\n"


def _readable(sock: socket.socket) -> bool:
    """Data or an end of file waiting on the socket, seen without waiting (poll: any descriptor number)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class DataBytes(bytes):
    """A message already as DATA carries it (see data_bytes): sent as it is."""


def data_bytes(raw: bytes) -> DataBytes:
    """The message as DATA carries it: CRLF line ends, a dot doubled at the start of a line, and the
    final CRLF "." CRLF. What smtplib does with two regular expressions, in a few passes of bytes
    methods when the message already ends its lines with CRLF."""
    if isinstance(raw, DataBytes):
        return raw
    if raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\r\n"):
        raw = _LINE_ENDS.sub(b"\r\n", raw)
    raw = dot_stuff(raw)
    return DataBytes(raw + (b".\r\n" if raw.endswith(b"\r\n") else b"\r\n.\r\n"))


def dot_stuff(lines: bytes) -> bytes:
    """CRLF lines that start a line, with a leading dot doubled (RFC 5321 4.5.2)."""
    if lines[:1] == b".":
        lines = b"." + lines
    return lines.replace(b"\r\n.", b"\r\n..")


class SmtpConnection:
    """One open connection to a relay, reused for many messages; fails over to the next relay."""

    def __init__(self, relays: Relay | list[Relay], timeout: float = 30.0, local_hostname: str | None = None):
        self.relays = [relays] if isinstance(relays, Relay) else list(relays)
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None
        self._current = 0  # the relay that worked last is tried first
        self._pipelining = False  # what the relay offers (EHLO)
        self._size = False
        self._opened = None  # ((sender, recipient), replies): an envelope sent ahead (`then`)
        self._in_flight = False  # the envelope for `then` is on the wire with this message
        self._sent = None  # (sender, then, next envelope): a message on the wire, its answer not read
        self._in_data = False  # writing a message's content: the relay is in DATA
        self._used_at = 0.0  # time.monotonic() of the relay's last answer
        self.idle_noop_seconds = IDLE_NOOP_SECONDS

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
                self._pipelining = self._smtp.has_extn("pipelining")
                self._size = self._smtp.has_extn("size")
                self._used_at = time.monotonic()
                return
            except (TransientMailError, PermanentMailError) as error:
                errors.append(f"{self.relays[index].host}:{self.relays[index].port}: {error}")
        raise TransientMailError("no relay reachable: " + "; ".join(errors))

    def _connect(self, relay: Relay) -> smtplib.SMTP:
        smtp = None
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
            smtp.ehlo_or_helo_if_needed()
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (smtplib.SMTPException, OSError) as exc:
            if smtp is not None:
                smtp.close()  # connected, then refused (STARTTLS, login): not left to the collector
            raise _classify(exc) from exc
        return smtp

    def send(self, message: EmailMessage | bytes, sender: str, recipient: str, then: str | None = None) -> None:
        """Send one message to one recipient; raise TransientMailError or PermanentMailError.

        `then`: whom the caller sends the next message to, from the same sender, whatever happens
        to this one. With PIPELINING their envelope rides with this message's content (RFC 2920):
        one round trip per message; a next call for anybody else hangs up rather than send them
        another's message (docs/ARCHITECTURE.md, "Delivery").
        """
        self.begin(message, sender, recipient, then)
        self.end()

    def begin(self, message: EmailMessage | bytes, sender: str, recipient: str, then: str | None = None) -> None:
        """send() up to the message on the wire; end() reads the relay's answer. In between the
        caller can do its own work (build the next message) while the relay reads this one."""
        raw = message if isinstance(message, bytes) else message.as_bytes()
        if self._in_flight or self._sent is not None or self._in_data:
            self.close()  # a send interrupted half-way: nobody knows where the session is
        opened = self._opened
        if opened is not None and opened[0] != (sender, recipient):
            self.close()
            opened = None
        if self._smtp is not None and not self._fit_after_idle(opened is not None):
            self.close()  # hung up by the relay while idle: a new connection, not a deferral
            opened = None
        self._opened = None
        if self._smtp is None:
            self.open()
        try:
            envelope = _envelope(sender, recipient, len(raw) if self._size else None)
        except UnicodeEncodeError as exc:  # a non-ASCII address, and we never negotiate SMTPUTF8
            raise PermanentMailError(f"address needs SMTPUTF8: {recipient!r}") from exc
        following = self._next_envelope(sender, then)
        try:
            self._transaction(envelope, recipient, raw, opened[1] if opened else None, following)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._failed(exc) from exc
        self._sent = (sender, then, following)

    def end(self) -> None:
        """The relay's answer to the message begin() sent (and to the next envelope, if any)."""
        sender, then, following = self._sent
        try:
            code, text = self._smtp.getreply()
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._failed(exc) from exc
        finally:
            self._sent = None
        metrics.record_smtp_reply(250)
        self._used_at = time.monotonic()
        if following is not None:
            try:  # this message is through; what the relay says to the next envelope is for later
                self._opened = ((sender, then), (self._smtp.getreply(), self._smtp.getreply(),
                                                 self._smtp.getreply()))
            except (smtplib.SMTPException, OSError):
                self.close()
            self._in_flight = False

    def _fit_after_idle(self, envelope_open: bool) -> bool:
        """False when the relay has hung up (or said goodbye, 421) while the connection was idle."""
        sock = self._smtp.sock
        if sock is None or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return False  # nothing is owed to us: whatever is there is a goodbye
        if _readable(sock):
            return False  # the relay spoke unasked, or closed the line
        if time.monotonic() - self._used_at < self.idle_noop_seconds:
            return True
        if envelope_open:
            return False  # the relay is reading a message: NOOP would be its text
        try:
            fit = self._smtp.noop()[0] == 250
        except (smtplib.SMTPException, OSError):
            return False
        self._used_at = time.monotonic()
        return fit

    def _failed(self, exc: Exception) -> Exception:
        metrics.record_smtp_reply(_reply_code(exc))
        error = _classify(exc)
        if (isinstance(error, TransientMailError) or isinstance(exc, smtplib.SMTPServerDisconnected)
                or self._in_flight or self._in_data):
            self.close()  # the session state is unknown now (or busy with `then`): start clean
        else:
            self._reset()
        return error

    def _next_envelope(self, sender: str, then: str | None) -> tuple[bytes, bytes, bytes] | None:
        if then is None or not self._pipelining:
            return None
        try:
            return _envelope(sender, then, None)
        except (UnicodeEncodeError, PermanentMailError):
            return None  # its own send() will say what is wrong with it

    def _transaction(self, envelope: tuple[bytes, bytes, bytes], recipient: str, raw: bytes,
                     replies=None, following: tuple[bytes, bytes, bytes] | None = None) -> None:
        """MAIL, RCPT, DATA and the message as smtplib.sendmail sends them, in one write with
        PIPELINING (two round trips instead of four, one with `then`) and without its regular
        expressions (docs/ARCHITECTURE.md, "Delivery"). `replies`: those to this envelope, sent
        ahead with the last message. Returns with the message sent: end() reads the answer."""
        smtp = self._smtp
        sock = smtp.sock
        mail, rcpt, data = envelope
        if replies is not None:
            pass
        elif self._pipelining:
            sock.sendall(mail + rcpt + data)
            replies = (smtp.getreply(), smtp.getreply(), smtp.getreply())
        else:
            replies = []
            for command, good in ((mail, 250), (rcpt, 251), (data, 354)):
                sock.sendall(command)
                replies.append(smtp.getreply())
                if replies[-1][0] != good and not (good == 251 and replies[-1][0] == 250):
                    break
        (mail_code, mail_text), *rest = replies
        if mail_code != 250:
            self._end_data(rest)
            raise smtplib.SMTPSenderRefused(mail_code, mail_text, "")
        rcpt_code, rcpt_text = rest[0]
        if rcpt_code not in (250, 251):
            self._end_data(rest[1:])
            raise smtplib.SMTPRecipientsRefused({recipient: (rcpt_code, rcpt_text)})
        data_code, data_text = rest[1]
        if data_code != 354:
            raise smtplib.SMTPDataError(data_code, data_text)
        self._in_data = True  # until the final "." is written, QUIT would be read as message text
        if following is not None:
            self._in_flight = True  # the next envelope goes too: its replies follow this one's
            sock.sendall(data_bytes(raw) + b"".join(following))
        else:
            sock.sendall(data_bytes(raw))
        self._in_data = False

    def _end_data(self, replies) -> None:
        """A relay that refused MAIL or RCPT yet answered the pipelined DATA with 354 waits for a
        message: an empty one ends it (and is refused for want of recipients) before RSET."""
        if replies and replies[-1][0] == 354:
            self._smtp.sock.sendall(b".\r\n")
            self._smtp.getreply()

    def _reset(self) -> None:
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        reading_a_message = self._opened is not None or self._in_flight or self._sent is not None or self._in_data
        self._opened, self._in_flight, self._sent, self._in_data = None, False, None, False
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        if reading_a_message:
            # The relay may be reading a message (an envelope sent ahead): QUIT would be taken for
            # its text. Hanging up makes it drop that message, which is what we want.
            smtp.close()
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
