"""The digest email: rendered once per digest, personalised per reader by string substitution.

`render_digest(digest, now)` does everything that is the same for every reader, once: the queries,
both templates, CSS inlining, quoted-printable encoding of the bodies and the header lines. The
per-reader parts (the greeting name, the address in the footer, the unsubscribe token) are left as
placeholders made of a random nonce, which no content can contain. `message_bytes` fills them in and
joins pre-encoded pieces: no template, no CSS, no email-package work per reader.

`message_for` builds the same message with the email package (compose.build_message); tests hold
the two to the same headers and content.
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from html import unescape
from urllib.parse import urljoin, urlsplit

import css_inline
from flask import current_app, render_template
from markupsafe import Markup, escape

from .. import tokens
from ..infra.smtp import DataBytes, data_bytes
from ..models import Article, Digest
from ..urls import absolute_url
from .compose import (
    BodyTemplate,
    address_line,
    alternative_head,
    alternative_parts,
    ascii_address,
    build_message,
    encoded_values,
    header_line,
    list_unsubscribe_mailto,
    message_id_maker,
    message_signer,
    sender_domain,
)
from .dkim import BodyHashTemplate, DkimSigner, canonical_headers, relaxed_header
from ..text import truncate
from ..times import zone_or_utc

TEST_SUBJECT_PREFIX = "[TEST] "
SAMPLE_READER = (0, "reader@example.com", "Sample Reader")  # previews: id 0 is nobody's

# The per-reader fields. Values: " " + name or "" (greeting), the address, the unsubscribe token.
GREETING_NAME, EMAIL, TOKEN = "N", "E", "T"

_INLINER = css_inline.CSSInliner(keep_style_tags=False, keep_link_tags=False, load_remote_stylesheets=False)
_SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.IGNORECASE | re.DOTALL)
_LINK_ATTRIBUTE = re.compile(r'(\s(?:href|src)=")([^"]*)(")', re.IGNORECASE)
_SAFE_SCHEMES = ("http", "https", "mailto")
_BLOCK_END = re.compile(r"<br\s*/?>|</(?:p|div|li|h[1-6]|blockquote|pre|tr)\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Recipient:
    """What the templates know about the reader: real values, or placeholders to fill in later."""

    greeting_name: str
    email: str
    unsubscribe_url: str


@dataclass(frozen=True)
class ArticleView:
    title: str
    url: str
    image_url: str | None
    summary_html: Markup
    summary_text: str
    byline: str


def digest_context(digest: Digest, now: datetime, subject: str) -> dict:
    """Everything both templates show that is the same for every reader."""
    config = current_app.config
    zone = zone_or_utc(config["DIGEST_TIMEZONE"])
    base = config["BASE_URL"] + "/"
    # An article hidden since the digest was composed (a takedown) is left out from then on.
    articles = [_article_view(article, base, zone) for article in digest.articles if not article.hidden]
    intro = (digest.intro or "").strip()
    return {
        "subject": subject,
        "site_name": config["SITE_NAME"],
        "home_url": absolute_url("public.index"),
        "issue_label": f"{len(articles)} new article{'s' if len(articles) != 1 else ''} · {_date_label(now, zone)}",
        "intro_paragraphs": [" ".join(p.split()) for p in re.split(r"\n\s*\n", intro) if p.strip()],
        "articles": articles,
        "preheader": truncate(" · ".join(a.title for a in articles), 150),
        "postal_lines": [line.strip() for line in config["MAIL_POSTAL_ADDRESS"].splitlines() if line.strip()],
    }


def _article_view(article: Article, base: str, zone) -> ArticleView:
    url = _safe_url(urljoin(base, article.url.strip())) or base
    image = urljoin(url, article.image_url.strip()) if article.image_url else None
    when = article.published_at or article.created_at
    author = one_line(article.author or "")
    summary = _absolute_links(article.summary_html or "", url)
    return ArticleView(
        title=one_line(article.title) or url,
        url=url,
        image_url=image if image and urlsplit(image).scheme.lower() in ("http", "https") else None,
        summary_html=Markup(summary),  # sanitised when the article came in
        summary_text=_plain_text(summary),
        byline=" · ".join(part for part in (f"By {author}" if author else "", _date_label(when, zone)) if part),
    )


def _plain_text(html: str) -> str:
    """Sanitised HTML as text: one wrapped paragraph per block, blank lines between."""
    blocks = (Markup(block).striptags() for block in _BLOCK_END.split(html))
    return "\n\n".join(textwrap.fill(block, 72, break_long_words=False, break_on_hyphens=False)
                        for block in blocks if block)


def _absolute_links(html: str, base: str) -> str:
    """Summaries may link relative to their article: make every link absolute, drop odd schemes."""
    def fix(match):
        url = _safe_url(urljoin(base, unescape(match.group(2)).strip())) or base
        return match.group(1) + str(escape(url)) + match.group(3)
    return _LINK_ATTRIBUTE.sub(fix, html)


def _safe_url(url: str) -> str | None:
    return url if urlsplit(url).scheme.lower() in _SAFE_SCHEMES else None


def _date_label(when: datetime, zone) -> str:
    local = when.astimezone(zone)
    return f"{local.day} {local:%B %Y}"


def one_line(value: str) -> str:
    """Text for one line: control characters and line breaks become spaces, runs of space one."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", value).split())


def list_id(config, domain: str) -> str:
    if config.get("LIST_ID"):
        return one_line(config["LIST_ID"])
    name = one_line(config["SITE_NAME"])
    if name.isascii():
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:  # the email package encodes the words; quotes would end up inside encoded-words
        phrase = " ".join(re.sub(r'["()<>\[\]:;@\\,.]', " ", name).split())
    return f"{phrase} <newsletter.{domain}>"


def render_digest(digest: Digest, now: datetime, test: bool = False) -> RenderedDigest:
    """Do, once per digest, everything that is the same for every reader. Needs an app context."""
    config = current_app.config
    domain = sender_domain()
    subject = one_line(digest.subject) or config["SITE_NAME"]
    if test:
        subject = TEST_SUBJECT_PREFIX + subject
    # Placeholders of letters and digits only pass unchanged through Jinja2, css_inline and URLs.
    nonce = secrets.token_hex(12)
    token_marker = f"X{nonce}{TOKEN}"
    placeholders = Recipient(f"X{nonce}{GREETING_NAME}", f"X{nonce}{EMAIL}",
                             absolute_url("public.unsubscribe", token=token_marker))
    values = {**digest_context(digest, now, subject), "recipient": placeholders}

    html = _SCRIPT.sub("", _INLINER.inline(render_template("email/digest.html", **values)))
    text = render_template("email/digest.txt", **values)
    pattern = re.compile(f"X{nonce}([{GREETING_NAME}{EMAIL}{TOKEN}])")
    # Both end with a line break, as the email package writes them.
    text, html = BodyTemplate(text.rstrip("\n") + "\n", pattern), BodyTemplate(html.rstrip("\n") + "\n", pattern)
    if any(nonce in piece for piece in text.static + html.static):
        raise RuntimeError("a placeholder survived rendering in an unexpected form")

    # No Auto-Submitted: RFC 3834 means it for automatic replies and notices; a newsletter is bulk
    # mail people asked for, which Precedence: bulk and List-Id say (and auto-repliers respect).
    headers = {
        "List-Id": list_id(config, domain),
        "Feedback-ID": f"digest-{digest.id}:newsletter:{domain}",
        "Precedence": "bulk",
    }
    if test:
        headers["X-Newsletter-Test"] = "yes"
    url_prefix, _, url_suffix = placeholders.unsubscribe_url.partition(token_marker)
    return RenderedDigest(
        digest_id=digest.id, subject=subject, test=test, domain=domain, mail_from=config["MAIL_FROM"],
        headers=headers, text=text, html=html, unsubscribe_url=(url_prefix, url_suffix),
        mailto_prefix=list_unsubscribe_mailto(""), signer=message_signer(), message_ids=message_id_maker(domain),
    )


@dataclass(frozen=True)
class Personalised:
    text: str
    html: str
    token: str
    unsubscribe_url: str


class RenderedDigest:
    """One digest, ready to be personalised for any number of readers (cheaply, without Flask)."""

    def __init__(self, *, digest_id: int, subject: str, test: bool, domain: str, mail_from: str,
                 headers: dict[str, str], text: BodyTemplate, html: BodyTemplate,
                 unsubscribe_url: tuple[str, str], mailto_prefix: str, signer: DkimSigner | None,
                 message_ids: Callable[..., str]):
        self.digest_id = digest_id
        self.subject = subject
        self.test = test
        self.domain = domain
        self.mail_from = mail_from
        self.headers = headers
        self.text = text
        self.html = html
        self.unsubscribe_url = unsubscribe_url
        self.mailto_prefix = mailto_prefix
        self.signer = signer
        self._message_ids = message_ids
        self._second = None  # what depends only on the second a message is made in: see _per_second
        boundary = "=_" + secrets.token_hex(16)  # "=_" can never occur in quoted-printable text
        # Header lines folded by the email package, once: From | To | Subject | per-reader | the rest.
        self._from = header_line("From", mail_from)
        self._subject = header_line("Subject", subject)
        self._rest = (header_line("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
                      + b"".join(header_line(name, value) for name, value in headers.items())
                      + alternative_head(boundary))
        self._text_open, self._html_open, self._close = alternative_parts(boundary)
        # "List-Unsubscribe: <https://.../unsubscribe/" TOKEN ">,\r\n <mailto:...unsubscribe%20" TOKEN ">\r\n"
        self._before_token = b"List-Unsubscribe: <" + unsubscribe_url[0].encode("ascii")
        self._between_tokens = unsubscribe_url[1].encode("ascii") + b">,\r\n <" + mailto_prefix.encode("ascii")
        if signer:  # DKIM: the fixed signed fields and the fixed parts of the body, canonical once
            self._signed_fields = canonical_headers(self._from + self._subject + self._rest)
            # List-Unsubscribe relaxed: "list-unsubscribe:<" prefix TOKEN suffix ">, <" mailto TOKEN ">"
            self._unsubscribe_signed = (b"list-unsubscribe:" + self._before_token[len(b"List-Unsubscribe: "):],
                                        self._between_tokens.replace(b",\r\n <", b", <"))
            self._body_hash = BodyHashTemplate([self._text_open, *text.hash_parts("text"), self._html_open,
                                                *html.hash_parts("html"), self._close])

    def _token(self, subscriber_id: int, now: datetime) -> str:
        return self._per_second(now)[0](subscriber_id)

    def _per_second(self, now: datetime) -> tuple:
        """(unsubscribe token maker, Date header line, its DKIM form) for the second `now` falls
        in: thousands of messages a second share them, and each cost more than the rest of a message."""
        second = int(now.timestamp())
        if self._second is None or self._second[0] != second:
            date_line = b"Date: " + format_datetime(now).encode("ascii") + b"\r\n"
            self._second = (second, (tokens.unsubscribe_maker(now), date_line, relaxed_header(date_line)))
        return self._second[1]

    def _message_id(self, subscriber_id: int, email: str, now: datetime) -> str:
        if self.test:  # never the real delivery's Message-ID: receivers would drop one as a duplicate
            return self._message_ids("digest-test", self.digest_id, email, now.isoformat())
        return self._message_ids("digest", self.digest_id, subscriber_id)

    def _values(self, name: str, email: str, token: str) -> tuple[dict, dict]:
        text = {GREETING_NAME: " " + name if name else "", EMAIL: email, TOKEN: token}
        html = {field: str(escape(value)) for field, value in text.items()}
        return text, html

    def personalise(self, subscriber_id: int, email: str, name: str | None, now: datetime) -> Personalised:
        """The text and HTML bodies one reader gets, as text (previews, message_for)."""
        token = self._token(subscriber_id, now)
        text_values, html_values = self._values(one_line(name or ""), email, token)
        return Personalised(self.text.fill(text_values), self.html.fill(html_values), token,
                            self.unsubscribe_url[0] + token + self.unsubscribe_url[1])

    def message_bytes(self, subscriber_id: int, email: str, name: str | None, now: datetime,
                      for_data: bool = False) -> bytes:
        """The whole message for one reader, as sent (signed when DKIM is configured).

        With `for_data`, as SMTP's DATA carries it (`DataBytes`: dots doubled, the final "."),
        made from pieces stuffed once per digest instead of searching 25 kB per reader; the
        transport then sends it as it is."""
        header_email = ascii_address(email)  # an internationalised domain in its IDNA form
        if header_email is None:  # a non-ASCII local part: let the email package decide how to write it
            message = self._signed(self.message_for(subscriber_id, email, name, now).as_bytes(), now)
            return data_bytes(message) if for_data else message
        name = one_line(name or "")
        make_token, date_line, date_signed = self._per_second(now)
        token = make_token(subscriber_id)
        token_bytes = token.encode("ascii")
        text_values, html_values = (encoded_values(values) for values in self._values(name, email, token))
        to_line = address_line("To", header_email, name)
        id_line = b"Message-ID: " + self._message_id(subscriber_id, email, now).encode("ascii") + b"\r\n"
        unsubscribe_line = self._before_token + token_bytes + self._between_tokens + token_bytes + b">\r\n"
        signature = self._signature(to_line, date_signed, id_line, token_bytes, text_values, html_values, now) \
            if self.signer else b""
        head = b"".join((signature, self._from, to_line, self._subject, date_line, id_line, unsubscribe_line,
                         self._rest, self._text_open))
        # Header lines never start with a dot (a name, or the blank of a folded line), nor do
        # the MIME boundaries: only the bodies need stuffing.
        if for_data:
            return DataBytes(b"".join((head, self.text.join(text_values, stuffed=True), self._html_open,
                                       self.html.join(html_values, stuffed=True), self._close, b".\r\n")))
        return b"".join((head, self.text.join(text_values), self._html_open, self.html.join(html_values),
                         self._close))

    def _signature(self, to_line: bytes, date_signed: bytes, id_line: bytes, token: bytes,
                   text_values: dict[str, bytes], html_values: dict[str, bytes], now: datetime) -> bytes:
        """One reader's DKIM-Signature fields: only their own values are canonicalised here."""
        fields = {**self._signed_fields, b"to": relaxed_header(to_line), b"date": date_signed,
                  b"message-id": b"message-id:" + id_line[len(b"Message-ID: "):],  # no space to squeeze
                  b"list-unsubscribe": self._unsubscribe_signed[0] + token + self._unsubscribe_signed[1]
                  + token + b">\r\n"}
        body_hash = self._body_hash.digest({**{("text", f): v for f, v in text_values.items()},
                                            **{("html", f): v for f, v in html_values.items()}})
        return self.signer.signature_lines(fields, body_hash, now)

    def message_for(self, subscriber_id: int, email: str, name: str | None, now: datetime):
        """The same message built by the email package (an EmailMessage; not DKIM-signed)."""
        bodies = self.personalise(subscriber_id, email, name, now)
        return build_message(
            to=ascii_address(email) or email, to_name=one_line(name or "") or None, subject=self.subject,
            text=bodies.text, html=bodies.html, message_id=self._message_id(subscriber_id, email, now),
            date=now, unsubscribe_url=bodies.unsubscribe_url, unsubscribe_token=bodies.token,
            headers=self.headers,
        )

    def _signed(self, message: bytes, now: datetime) -> bytes:
        return self.signer.sign(message, now) if self.signer else message

