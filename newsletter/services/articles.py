"""Articles in: feeds (services.feeds), JSON files and the API all end here, each article validated
whole before anything is written, then upserted in one transaction.

An article is known by `Article.key`: its feed guid, else its canonical URL. Bringing the same
article in again changes nothing; a changed one updates its row; the unique key settles races.
Titles become plain text, summaries sanitised HTML (nh3), URLs absolute http(s) or nothing.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Callable
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import nh3
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..errors import InvalidInput
from ..extensions import db
from ..models import Article
from ..text import truncate
from ..times import parse_iso

MAX_URL = 2048
MAX_KEY = 2048
MAX_TITLE = 500
MAX_AUTHOR = 200
MAX_SUMMARY = 100_000  # characters of sanitised HTML; longer ones are cut (and re-sanitised)
MAX_SOURCE = 2048
LOOKUP_CHUNK = 500  # keys per IN (...) query, far below every driver's parameter limit

SUMMARY_TAGS = {"p", "a", "em", "strong", "b", "i", "ul", "ol", "li", "br", "blockquote", "img"}
SUMMARY_ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt"}}
# Dropped with everything inside them, not just their tags.
DROPPED_WITH_CONTENT = {"script", "style", "iframe", "noscript", "object", "embed", "template", "textarea",
                        "select", "button"}
LINK_SCHEMES = {"http", "https", "mailto"}
IMAGE_SCHEMES = {"http", "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ArticleData:
    """One article as it will be stored: every field already cleaned and checked."""

    key: str
    url: str
    title: str
    summary_html: str
    author: str | None
    image_url: str | None
    published_at: datetime | None

    def fields(self) -> dict:
        return {"url": self.url, "title": self.title, "summary_html": self.summary_html, "author": self.author,
                "image_url": self.image_url, "published_at": self.published_at}

    def differs_from(self, article: Article) -> bool:
        return any(getattr(article, name) != value for name, value in self.fields().items())


@dataclass(frozen=True)
class EntryError:
    index: int  # JSON: the 0-based array index; feeds: the entry's 1-based position in the document
    label: str  # how a person finds it: "index 3", "entry 4 ('Title')"
    reason: str


@dataclass
class Parsed:
    """What an input held: the good articles (with position and label) and the bad entries."""

    articles: list[tuple[int, str, ArticleData]] = field(default_factory=list)
    errors: list[EntryError] = field(default_factory=list)


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[EntryError] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def all_bad(self) -> bool:
        """There were entries, and not one of them could be taken."""
        return bool(self.errors) and not self.imported

    def as_json(self) -> dict:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "errors": [{"index": error.index, "error": error.reason} for error in self.errors]}

    def describe(self) -> str:
        line = f"{self.created} new, {self.updated} updated, {self.unchanged} unchanged"
        if self.errors:
            count = len(self.errors)
            line += f"; {count} bad {'entry' if count == 1 else 'entries'}: "
            line += "; ".join(f"{error.label}: {error.reason}" for error in self.errors)
        return line


# --- Cleaning -------------------------------------------------------------------------------------

def plain_text(raw: str, max_length: int) -> str:
    """Text for a title or a name: no tags, entities decoded, one line, at most max_length."""
    text = html.unescape(nh3.clean(raw, tags=set()))
    text = " ".join(_CONTROL.sub(" ", text).split())
    return truncate(text, max_length)


def sanitize_summary(raw: str, base_url: str | None = None) -> str:
    """A small, safe subset of HTML. Relative links are made absolute against base_url; a link or
    image whose URL is not http(s) (or mailto: for links) loses its URL."""
    def absolute_safe_urls(tag, attribute, value):
        if attribute not in ("href", "src"):
            return value
        url = urljoin(base_url, value.strip()) if base_url else value.strip()
        allowed = IMAGE_SCHEMES if attribute == "src" else LINK_SCHEMES
        return url if urlsplit(url).scheme.lower() in allowed else None

    def clean(value: str) -> str:
        return nh3.clean(value, tags=SUMMARY_TAGS, clean_content_tags=DROPPED_WITH_CONTENT,
                         attributes=SUMMARY_ATTRIBUTES, url_schemes=LINK_SCHEMES,
                         link_rel="noopener noreferrer", attribute_filter=absolute_safe_urls).strip()

    cleaned = clean(raw)
    if len(cleaned) > MAX_SUMMARY:
        cleaned = clean(cleaned[:MAX_SUMMARY])  # the second pass closes what the cut left open
    return cleaned


def http_url(raw, name: str) -> str:
    """An absolute http(s) URL, or InvalidInput saying why not."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InvalidInput(name, f"no {name}")
    if not isinstance(raw, str):
        raise InvalidInput(name, f"{name} must be a string")
    value = raw.strip()
    if _CONTROL.search(value) or " " in value:
        raise InvalidInput(name, f"{name} contains spaces or control characters")
    if len(value) > MAX_URL:
        raise InvalidInput(name, f"{name} is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError:
        raise InvalidInput(name, f"{name} is not a valid URL: {shorten(value)!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInput(name, f"{name} is not an absolute http(s) URL: {shorten(value)!r}")
    if parts.username is not None or parts.password is not None:
        # https://trusted.example@evil.example/ is a phishing shape, never a real article link.
        raise InvalidInput(name, f"{name} must not contain a user name or password")
    return value


def canonical_url(raw, name: str = "url") -> str:
    """The URL that identifies an article: scheme and host lowercased, default port, fragment and
    utm_* tracking parameters dropped. Everything else is kept byte for byte."""
    parts = urlsplit(http_url(raw, name))
    scheme = parts.scheme.lower()
    host = parts.hostname  # already lowercased
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if parts.port and parts.port != _DEFAULT_PORTS[scheme]:
        host += f":{parts.port}"
    query = "&".join(pair for pair in parts.query.split("&")
                     if pair and not unquote(pair.split("=", 1)[0]).lower().startswith("utm_"))
    return urlunsplit((scheme, host, parts.path or "/", query, ""))


def article_key(guid, url: str) -> str:
    """The guid when there is one (a URL-shaped guid in canonical form), else the canonical URL."""
    if not isinstance(guid, str) or not guid.strip():
        return url
    guid = guid.strip()
    if urlsplit(guid).scheme.lower() in ("http", "https"):
        try:
            guid = canonical_url(guid, "guid")
        except InvalidInput:
            pass  # an odd-looking guid is still a guid
    if len(guid) > MAX_KEY:
        raise InvalidInput("guid", f"guid is longer than {MAX_KEY} characters")
    return guid


def build_article(*, url, title, summary_html: str = "", author=None, image_url=None,
                  published_at: datetime | None = None, guid=None, url_name: str = "url") -> ArticleData:
    """Checks and cleans every field; raises InvalidInput for the first one that is wrong."""
    url = canonical_url(url, url_name)
    clean_title = plain_text(title, MAX_TITLE) if isinstance(title, str) else ""
    if not clean_title:
        raise InvalidInput("title", "no title" if title is None or isinstance(title, str) else "title must be a string")
    return ArticleData(
        key=article_key(guid, url),
        url=url,
        title=clean_title,
        summary_html=sanitize_summary(summary_html, url) if summary_html else "",
        author=(plain_text(author, MAX_AUTHOR) or None) if author else None,
        image_url=http_url(image_url, "image_url") if image_url else None,
        published_at=published_at,
    )


# --- JSON -----------------------------------------------------------------------------------------

def article_from_json(item) -> ArticleData:
    """{url, title, summary, author, image_url, published_at}: url and title required, summary HTML,
    published_at ISO 8601 (a time without an offset is taken as UTC)."""
    if not isinstance(item, dict):
        raise InvalidInput("article", "not an object")
    for name in ("summary", "author", "image_url", "published_at"):
        if item.get(name) is not None and not isinstance(item[name], str):
            raise InvalidInput(name, f"{name} must be a string")
    return build_article(url=item.get("url"), title=item.get("title"), summary_html=item.get("summary") or "",
                         author=item.get("author"), image_url=item.get("image_url"),
                         published_at=_iso_datetime(item.get("published_at")))


def _iso_datetime(raw: str | None) -> datetime | None:
    if raw is None or not raw.strip():
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        raise InvalidInput("published_at", f"published_at is not an ISO 8601 date-time: {shorten(raw)!r}") from None


def parse_json(payload) -> Parsed:
    """A JSON array of article objects, or one object."""
    items = [payload] if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise InvalidInput("articles", "Expected a JSON array of article objects (or one article object).")
    parsed = Parsed()
    for index, item in enumerate(items):
        label = f"index {index}"
        try:
            parsed.articles.append((index, label, article_from_json(item)))
        except InvalidInput as error:
            parsed.errors.append(EntryError(index, label, error.message))
    return parsed


def import_json(payload, source: str, now: datetime) -> ImportReport:
    return save(parse_json(payload), source, now)


# --- Storing --------------------------------------------------------------------------------------

def save(parsed: Parsed, source: str, now: datetime, also: Callable[[], None] | None = None) -> ImportReport:
    """Creates new articles, updates changed ones, in one transaction. `also` runs inside that
    transaction (a feed's validators are stored with its articles, or not at all); it may run twice."""
    articles, repeated = _first_of_each_key(parsed.articles)
    report = ImportReport(errors=sorted(parsed.errors + repeated, key=lambda error: error.index))
    try:
        counts = _write(articles, source[:MAX_SOURCE], now, also)
    except IntegrityError:
        # Another import added one of these articles (or this feed's state) between our read and our
        # insert. Its row stands now: start again, and compare with it.
        db.session.rollback()
        counts = _write(articles, source[:MAX_SOURCE], now, also)
    report.created, report.updated, report.unchanged = counts
    return report


def _first_of_each_key(articles):
    first: dict[str, str] = {}
    kept, repeated = [], []
    for index, label, data in articles:
        if data.key in first:
            repeated.append(EntryError(index, label, f"the same article as {first[data.key]}"))
        else:
            first[data.key] = label
            kept.append(data)
    return kept, repeated


def _write(articles: list[ArticleData], source: str, now: datetime, also) -> tuple[int, int, int]:
    created = updated = unchanged = 0
    existing = _existing_by_key([data.key for data in articles])
    for data in articles:
        article = existing.get(data.key)
        if article is None:
            db.session.add(Article(key=data.key, source=source, hidden=False, created_at=now, updated_at=now,
                                   **data.fields()))
            created += 1
        elif data.differs_from(article):
            # `hidden` and `source` are left alone: a takedown outlives the next fetch.
            for name, value in data.fields().items():
                setattr(article, name, value)
            article.updated_at = now
            updated += 1
        else:
            unchanged += 1
    if also is not None:
        also()
    db.session.commit()
    return created, updated, unchanged


def _existing_by_key(keys: list[str]) -> dict[str, Article]:
    found = {}
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start:start + LOOKUP_CHUNK]
        found.update((article.key, article) for article in db.session.scalars(select(Article).where(Article.key.in_(chunk))))
    return found


def shorten(value: str, length: int = 80) -> str:
    return truncate(value, length)
