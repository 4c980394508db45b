"""Building well-formed messages: HTML + text, RFC 8058 unsubscribe headers, no header injection."""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from urllib.parse import quote

from flask import current_app

from ..validation import reject_control_characters


def sender_address() -> str:
    return parseaddr(current_app.config["MAIL_FROM"])[1]


def sender_domain() -> str:
    return sender_address().rpartition("@")[2] or "localhost"


def deterministic_message_id(*parts) -> str:
    # A retry of the same message carries the same Message-ID, so receivers can de-duplicate.
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:32]
    return f"<{digest}@{sender_domain()}>"


def list_unsubscribe_mailto(token: str) -> str:
    address = current_app.config["LIST_UNSUBSCRIBE_MAILTO"] or f"unsubscribe@{sender_domain()}"
    return f"mailto:{address}?subject={quote('unsubscribe ' + token)}"


def build_message(*, to: str, to_name: str | None, subject: str, text: str, html: str,
                  message_id: str, date: datetime, unsubscribe_url: str, unsubscribe_token: str,
                  headers: dict[str, str] | None = None) -> EmailMessage:
    # The SMTP policy refuses CR/LF inside a header value, and we refuse them earlier, at input.
    reject_control_characters("subject", subject)
    msg = EmailMessage(policy=SMTP)
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
