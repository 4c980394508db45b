"""RSS 2.0 and Atom feeds: their entries as articles (feedparser reads, services.articles cleans and
stores), and fetching them over HTTP with a conditional GET, what the server said (ETag,
Last-Modified, or the error) kept in FeedState for next time.

A feed that fails (no answer, HTTP error, not a feed) is recorded and reported; the others go on.
The validators are stored in the same transaction as the articles, so a fetch whose articles were
not saved is never answered "304 Not Modified" the next time.
"""

from __future__ import annotations

import html
import io
import logging
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urljoin

import feedparser
from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..errors import InvalidInput
from ..extensions import db
from ..infra import outbound_http
from ..infra.outbound_http import Resolver
from ..models import FeedState
from . import articles
from .articles import ArticleData, EntryError, ImportReport, Parsed, build_article, plain_text, shorten

log = logging.getLogger(__name__)

MAX_FEED_BYTES = 10 * 1024 * 1024
MAX_ERROR = 500  # FeedState.last_error
MAX_ETAG = 500  # FeedState.etag
MAX_LAST_MODIFIED = 100  # FeedState.last_modified
LABEL_TITLE = 60  # characters of an entry's title in an error message
# What every fetch that got no HTTP answer says, whatever the reason: the reason is in the log.
UNREACHABLE = "the feed could not be fetched"
ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"


class FeedFetchError(Exception):
    """The feed could not be fetched: no HTTP answer (UNREACHABLE), an HTTP error status, too large."""


# --- Feed documents ------------------------------------------------------------------------------

def parse_feed(content: bytes, base_url: str | None = None, content_type: str | None = None) -> Parsed:
    """Entries of an RSS or Atom document. Raises InvalidInput when it is not a feed at all.

    base_url (where the document came from) resolves relative entry links. Relative links inside a
    summary are resolved against its xml:base when it has one, else against the article's own URL:
    they were written for the article's page, which is often not where the feed lives.
    """
    headers = {"content-type": content_type} if content_type else {}
    # A stream, never bytes or str: given those, feedparser may treat them as a file name or URL.
    document = feedparser.parse(io.BytesIO(content), response_headers=headers,
                                sanitize_html=False,  # nh3 sanitises, with our policy
                                resolve_relative_uris=True)
    if not document.get("version") and not document.entries:
        reason = document.get("bozo_exception")
        raise InvalidInput("feed", f"not an RSS or Atom feed ({reason})" if reason else "not an RSS or Atom feed")
    parsed = Parsed()
    for position, entry in enumerate(document.entries, start=1):
        label = _entry_label(position, entry)
        try:
            parsed.articles.append((position, label, article_from_entry(entry, base_url)))
        except InvalidInput as error:
            parsed.errors.append(EntryError(position, label, error.message))
    return parsed


def article_from_entry(entry, base_url: str | None = None) -> ArticleData:
    link = entry.get("link")
    if isinstance(link, str) and link.strip() and base_url:
        link = urljoin(base_url, link.strip())
    return build_article(url=link, url_name="link", title=entry.get("title"), summary_html=_entry_summary(entry),
                         author=entry.get("author"), image_url=_entry_image(entry, link),
                         published_at=_entry_datetime(entry), guid=entry.get("id"))


def _entry_summary(entry) -> str:
    detail = entry.get("summary_detail") or next(iter(entry.get("content") or []), None)
    if not detail or not detail.get("value"):
        return ""
    if detail.get("type") == "text/plain":
        return html.escape(detail["value"])
    return detail["value"]


def _entry_image(entry, link) -> str | None:
    candidates = [media.get("url") for media in entry.get("media_content") or []
                  if media.get("medium") == "image" or (media.get("type") or "").startswith("image/")]
    candidates += [thumbnail.get("url") for thumbnail in entry.get("media_thumbnail") or []]
    candidates += [enclosure.get("href") for enclosure in entry.get("enclosures") or []
                   if (enclosure.get("type") or "").startswith("image/")]
    for candidate in candidates:
        if not isinstance(candidate, str) or not candidate.strip():
            continue
        url = urljoin(link, candidate.strip()) if isinstance(link, str) else candidate.strip()
        try:
            return articles.http_url(url, "image")
        except InvalidInput:
            continue  # a broken image never costs the article
    return None


def _entry_datetime(entry) -> datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")  # struct_time, in UTC
    try:
        return datetime(*parsed[:6], tzinfo=timezone.utc) if parsed else None
    except (TypeError, ValueError):
        return None


def _entry_label(position: int, entry) -> str:
    title = entry.get("title")
    title = plain_text(title, LABEL_TITLE) if isinstance(title, str) else ""
    if title:
        return f"entry {position} ({title!r})"
    guid = entry.get("id")
    if isinstance(guid, str) and guid.strip():
        return f"entry {position} ({shorten(guid.strip())})"
    return f"entry {position}"


def import_document(content: bytes, source: str, now: datetime) -> ImportReport:
    """A feed document from a file: its entries imported, the bad ones named."""
    return articles.save(parse_feed(content), source, now)


# --- Fetching -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Download:
    url: str  # after redirects
    content: bytes | None  # None: 304 Not Modified
    content_type: str | None
    etag: str | None
    last_modified: str | None


@dataclass
class FeedReport:
    url: str
    articles: ImportReport | None = None  # None when not modified or failed
    not_modified: bool = False
    error: str | None = None

    @property
    def failed(self) -> bool:
        """The fetch failed, or every entry the feed had was bad."""
        return self.error is not None or (self.articles is not None and self.articles.all_bad)

    def describe(self) -> str:
        if self.error is not None:
            return f"feed {self.url}: failed: {self.error}"
        if self.not_modified:
            return f"feed {self.url}: not modified since the last fetch; nothing imported"
        return f"feed {self.url}: {self.articles.describe()}"


def fetch_configured(now: datetime) -> list[FeedReport]:
    """Fetch every feed of FEED_URLS (what beat's fetch_feeds task runs)."""
    return fetch_all(current_app.config["FEED_URLS"], now)


def fetch_all(urls, now: datetime) -> list[FeedReport]:
    return [fetch_feed(url, now) for url in dict.fromkeys(urls)]


def fetch_feed(url: str, now: datetime, resolve: Resolver = socket.getaddrinfo) -> FeedReport:
    try:
        url = articles.http_url(url, "feed URL")
    except InvalidInput as error:
        return FeedReport(url, error=error.message)  # not a feed we could ever fetch: nothing to record
    state = db.session.scalar(select(FeedState).where(FeedState.url == url))
    etag, last_modified = (state.etag, state.last_modified) if state else (None, None)
    db.session.rollback()  # no transaction stays open while we wait on the network
    try:
        download = fetch(url, etag, last_modified, current_app.config["FEED_TIMEOUT"],
                         current_app.config["FEED_ALLOW_PRIVATE"], resolve)
        if download.content is None:
            _record(url, now, download=download)
            return FeedReport(url, not_modified=True)
        parsed = parse_feed(download.content, base_url=download.url, content_type=download.content_type)
    except (FeedFetchError, InvalidInput) as error:
        message = error.message if isinstance(error, InvalidInput) else str(error)
        log.warning("feed %s failed: %s", url, message)
        _record(url, now, error=message)
        return FeedReport(url, error=message)
    report = articles.save(parsed, url, now, also=lambda: _record(url, now, download=download, commit=False))
    return FeedReport(url, articles=report)


def _record(url: str, now: datetime, download: Download | None = None, error: str | None = None,
            commit: bool = True) -> None:
    """A success stores the server's validators and clears the error; a failure keeps the old
    validators (the next fetch asks again) and stores the error."""
    def write():
        state = db.session.scalar(select(FeedState).where(FeedState.url == url))
        if state is None:
            state = FeedState(url=url)
            db.session.add(state)
        if error is not None:
            state.last_error = error[:MAX_ERROR]
            return
        state.fetched_at = now
        state.last_error = None
        # A 200 replaces both validators; a 304 refreshes those it repeats, the others still hold.
        replace = download.content is not None
        if replace or download.etag:
            state.etag = _fits(download.etag, MAX_ETAG)
        if replace or download.last_modified:
            state.last_modified = _fits(download.last_modified, MAX_LAST_MODIFIED)

    if not commit:
        write()
        return
    try:
        write()
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # a concurrent fetch made the row first: update that one
        write()
        db.session.commit()


def _fits(value: str | None, length: int) -> str | None:
    # A cut validator would never match; better to send none.
    return value if value and len(value) <= length else None


# --- HTTP -----------------------------------------------------------------------------------------

def fetch(url: str, etag: str | None, last_modified: str | None, timeout: float, allow_private: bool = False,
          resolve: Resolver = socket.getaddrinfo) -> Download:
    """GET url, conditionally, within `timeout` seconds in all (redirects included). Addresses of
    the network we run in are refused unless `allow_private` (FEED_ALLOW_PRIVATE)."""
    headers = {"User-Agent": f"{current_app.config['SITE_NAME']} feed reader (+{current_app.config['BASE_URL']})",
               "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        response = outbound_http.get(url, headers, timeout=timeout, max_bytes=MAX_FEED_BYTES,
                                     allow_private=allow_private, resolve=resolve)
    except outbound_http.Unreachable as error:
        # The detail (refused address, closed port, unknown host...) would map our network: log only.
        log.warning("feed %s could not be fetched: %s", url, error)
        raise FeedFetchError(UNREACHABLE) from None
    except outbound_http.HttpStatusError as error:
        raise FeedFetchError(f"HTTP {error.code} {error.phrase}" if error.phrase else f"HTTP {error.code}") from None
    except outbound_http.TooLarge:
        raise FeedFetchError(f"larger than {MAX_FEED_BYTES // (1024 * 1024)} MB") from None
    if response.body is None:
        return Download(url=url, content=None, content_type=None, etag=response.headers.get("ETag"),
                        last_modified=response.headers.get("Last-Modified"))
    return Download(url=response.url, content=response.body, content_type=response.headers.get("Content-Type"),
                    etag=response.headers.get("ETag"), last_modified=response.headers.get("Last-Modified"))
