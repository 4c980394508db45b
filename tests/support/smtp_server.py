"""A real SMTP server on loopback for tests (aiosmtpd), that can be told how to answer.

Like GNU Mailman's test server: per recipient it can answer 4xx or 5xx to RCPT or DATA, or drop the
line after the message was sent but before the 250, the one duplicate window SMTP has. It can also
hang up on connections left idle, as real relays do.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from .services import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    at: float = field(default_factory=time.monotonic)  # when the relay accepted it

    @property
    def message(self):
        return BytesParser(policy=policy.default).parsebytes(self.data)


@dataclass
class Plan:
    """How to answer, per recipient: a list of replies used one per attempt, then 250."""

    rcpt: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, list[str]] = field(default_factory=dict)
    drop_after_data: dict[str, int] = field(default_factory=dict)  # recipient -> times to drop
    data_delay: float = 0.0  # seconds before answering DATA: a slow relay, so a send can be caught mid-way
    # recipient -> event: DATA for them waits until the event is set (a send caught mid-way); a
    # message whose client is gone by then is not stored, as a real relay would not deliver it.
    hold: dict[str, threading.Event] = field(default_factory=dict)
    # Offer PIPELINING (RFC 2920) in the EHLO reply, as Postfix, Exim and the big providers do;
    # off, the client must wait for each reply.
    pipelining: bool = True
    mail: list[str] = field(default_factory=list)  # replies to MAIL FROM, one per attempt, then 250


class ScriptedHandler:
    def __init__(self):
        self.received: list[Received] = []
        self.plan = Plan()
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.holding: set[str] = set()  # recipients whose DATA is being held right now
        self.mail_options: list[list[str]] = []  # the parameters of each MAIL FROM, in order
        self.connections = 0  # SMTP sessions opened (EHLO)
        self.disconnects = 0  # SMTP sessions ended, by either side
        self.noops = 0

    def _next(self, table: dict[str, list[str]], address: str) -> str | None:
        with self.lock:
            replies = table.get(address.lower())
            return replies.pop(0) if replies else None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        if self.plan.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_NOOP(self, server, session, envelope, arg):
        with self.lock:
            self.noops += 1
        return "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            self.mail_options.append(list(mail_options))
            reply = self.plan.mail.pop(0) if self.plan.mail else None
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self._next(self.plan.rcpt, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.plan.data_delay:
            await asyncio.sleep(self.plan.data_delay)
        for address in envelope.rcpt_tos:
            gate = self.plan.hold.get(address.lower())
            if gate is not None:
                self.holding.add(address.lower())
                await asyncio.get_running_loop().run_in_executor(None, gate.wait)
                self.holding.discard(address.lower())
                if server.transport is None or server.transport.is_closing():
                    return "421 client gone"
        for address in envelope.rcpt_tos:
            with self.lock:
                self.attempts[address.lower()] = self.attempts.get(address.lower(), 0) + 1
            reply = self._next(self.plan.data, address)
            if reply:
                return reply
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            for address in envelope.rcpt_tos:
                if self.plan.drop_after_data.get(address.lower(), 0) > 0:
                    self.plan.drop_after_data[address.lower()] -= 1
                    server.transport.close()  # received, but the client never hears the 250
                    return "250 dropped"
        return "250 Message accepted"


class _CountingSMTP(SMTP):
    def connection_lost(self, exc):
        greeted = self.session is not None and self.session.host_name is not None  # not the start-up probe
        super().connection_lost(exc)
        if greeted:
            with self.event_handler.lock:
                self.event_handler.disconnects += 1


class _Controller(Controller):
    def factory(self):
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


class SMTPTestServer:
    def __init__(self, host="127.0.0.1", port=0, idle_timeout: float | None = None):
        """idle_timeout: hang up on a connection that sent no command for this many seconds."""
        self.handler = ScriptedHandler()
        extra = {} if idle_timeout is None else {"timeout": idle_timeout}
        self.controller = _Controller(self.handler, hostname=host, port=port or free_port(host), **extra)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://{self.controller.hostname}:{self.controller.port}"

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    @property
    def plan(self) -> Plan:
        return self.handler.plan

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address.lower() in (a.lower() for a in r.recipients)]

    def wait_for(self, address: str, count: int = 1, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.to(address)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{address} received {len(self.to(address))} of {count} messages in {timeout}s")

