"""The shapes of /api/v1's request and response bodies, each declared once.

Request bodies are validated with them (parsing.body), answers are made through them
(representations), and openapi.py generates the document's components.schemas from them.

A request field runs the rule every other way in uses (newsletter.validation, the services) before
its own type and limits, so a person gets the same message from the API as from the form; the
first field at fault is the one named, so fields are declared in the order they are checked.
"""

from datetime import datetime
from typing import Annotated, Literal, get_type_hints

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from typing_extensions import TypedDict
from typing import NotRequired

from ...errors import InvalidInput
from ...models import ConsentKind, DigestStatus, SubscriberStatus
from ...services import bot_traps, digests, subscriptions
from ...validation import clean_name, consent_given, normalize_email, reject_control_characters
from .limits import MAX_CONSENT_SOURCE, MAX_EMAIL_LENGTH, MAX_ID, MAX_NAME_LENGTH, MAX_SUBJECT_LENGTH
from ...times import parse_iso

OPERATOR_CONSENT_REQUIRED = ("consent must be true: the person's own yes to receiving the newsletter "
                             "(the raw value is recorded). Nothing was stored.")
UNKNOWN_TERMS = "Unknown terms version."


# --- the rules of request fields ----------------------------------------------------------------


def _real_yes(message: str):
    def check(raw):
        if not consent_given(raw):
            raise InvalidInput("consent", message)
        return raw  # the raw value goes into the consent ledger

    return check


def _consent_source(raw) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput("consent_source", "Say where and how the person gave their consent "
                                             "(consent_source), e.g. 'paper form at the 2026 book fair'.")
    reject_control_characters("consent_source", raw)
    if len(raw.strip()) > MAX_CONSENT_SOURCE:
        raise InvalidInput("consent_source", f"consent_source is too long (at most {MAX_CONSENT_SOURCE} characters).")
    return raw.strip()


def _terms_id(raw) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError, OverflowError):  # JSON allows Infinity
        raise InvalidInput("terms_version", UNKNOWN_TERMS) from None
    if not 0 < value <= MAX_ID:
        raise InvalidInput("terms_version", UNKNOWN_TERMS)
    return value


def _no_honeypot(raw) -> None:
    bot_traps.check_honeypot(raw)
    return None


def _text_or_nothing(raw) -> str | None:
    return raw if isinstance(raw, str) else None


def _subject(raw) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise InvalidInput("subject", "subject must be a string.")
    return digests.checked_subject(raw)


def _utc_time(field: str):
    """ISO 8601; a time without an offset is UTC."""
    def parse(raw) -> datetime | None:
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise InvalidInput(field, f"{field} must be an ISO 8601 date-time string.")
        try:
            return parse_iso(raw)
        except ValueError:
            raise InvalidInput(field, f"{field} is not an ISO 8601 date-time: {raw[:60]!r}.") from None

    return parse


Email = Annotated[str, Field(max_length=MAX_EMAIL_LENGTH, json_schema_extra={"format": "email"}),
                  BeforeValidator(normalize_email)]
Name = Annotated[str | None, Field(max_length=MAX_NAME_LENGTH), BeforeValidator(clean_name)]


class RequestBody(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _absent_is_null(cls, data):
        # A required field that is left out gets its rule's own answer ("Please enter your email
        # address."), exactly as one sent as null.
        if isinstance(data, dict):
            return {**{name: None for name, field in cls.model_fields.items() if field.is_required()}, **data}
        return data


# --- requests -----------------------------------------------------------------------------------


class Signup(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"email": "ada@example.com", "name": "Ada", "consent": True,
         "source": "https://news.example.org/2026/11/harbour"}]})

    website: Annotated[str | None, Field(max_length=0, description="Honeypot: leave it out or empty; a value is "
                                                                     "refused."), BeforeValidator(_no_honeypot)] = None
    terms_version: Annotated[int, Field(ge=1, le=MAX_ID, description="The id of the terms version shown; default: "
                                                                     "the current one."),
                             BeforeValidator(_terms_id)] = None
    email: Email
    name: Name = None
    consent: Annotated[bool | str, Field(description="A real yes: true, or one of y, yes, on, true, 1. Anything "
                                                     "else is refused."),
                       BeforeValidator(_real_yes(subscriptions.CONSENT_REQUIRED))]
    source: Annotated[str | None, Field(description="The page or form, for the record."),
                      BeforeValidator(_text_or_nothing)] = None


class NewSubscriber(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"email": "ada@example.com", "name": "Ada Lovelace", "consent": True,
         "consent_source": "paper form at the 2026 book fair"}]})

    email: Email
    consent: Annotated[bool | str, Field(description="Must be true (or one of y, yes, on, true, 1): the "
                                                     "person's own yes. Anything else is refused (400)."),
                       BeforeValidator(_real_yes(OPERATOR_CONSENT_REQUIRED))]
    consent_source: Annotated[str, Field(min_length=1, max_length=MAX_CONSENT_SOURCE,
                                         description="Where and how the consent was given; recorded as "
                                                     "'api-operator: <consent_source>'."),
                              BeforeValidator(_consent_source)]
    name: Name = None


class NewDigest(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {}, {"subject": "This week's news"}, {"since": "2026-11-01T00:00:00Z"}]})

    subject: Annotated[str | None, Field(max_length=MAX_SUBJECT_LENGTH,
                                         description="Default: '<site>: <newest title> and N more'."),
                       BeforeValidator(_subject)] = None
    since: Annotated[datetime | None, Field(description="Take the articles published since then, sent before "
                                                        "or not. Default: those no digest that went out carried."),
                     BeforeValidator(_utc_time("since"))] = None


class ArticleIn(BaseModel):
    """One article. services.articles checks each entry of a batch on its own (a partly bad batch
    imports the good entries and reports the others), as it does for feeds and JSON files."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"url": "https://news.example.org/2026/11/harbour", "title": "The new harbour",
         "summary": "<p>What the council decided.</p>", "author": "Jane Reporter",
         "published_at": "2026-11-02T08:00:00Z"}]})

    url: Annotated[str, Field(description="Absolute http(s) URL; identifies the article.")]
    title: Annotated[str, Field(description="Plain text (tags are removed).")]
    summary: Annotated[str | None, Field(description="HTML; sanitised to a small safe subset.")] = None
    author: str | None = None
    image_url: Annotated[str | None, Field(description="Absolute http(s) URL.")] = None
    published_at: Annotated[str | None, Field(description="ISO 8601; without an offset, UTC.")] = None


# --- answers ------------------------------------------------------------------------------------


class Error(TypedDict):
    error: Annotated[str, Field(description="What went wrong, for people.")]
    field: NotRequired[Annotated[str, Field(description="The input at fault, when one is.")]]


NextAfterId = Annotated[int | None, Field(description="Pass as after_id for the next page; null on the last page.")]


class Answer(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # made from rows as well as from dicts


class Subscriber(Answer):
    id: int
    email: str
    name: str | None
    status: SubscriberStatus
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None


class ConsentEvent(Answer):
    kind: ConsentKind
    at: datetime
    ip: str | None
    user_agent: str | None
    source: str | None
    terms_version: int | None
    terms_sha256: str | None
    checkbox_value: Annotated[str | None, Field(description="The raw consent value sent.")]


class SubscriberWithConsent(Subscriber):
    consent_events: Annotated[list[ConsentEvent], Field(description="The consent ledger, oldest first.")]


class SubscriberCreated(Subscriber):
    message: str


class SubscriberPage(Answer):
    items: list[Subscriber]
    next_after_id: NextAfterId


class Article(Answer):
    id: int
    url: str
    title: str
    summary_html: str
    author: str | None
    image_url: str | None
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime
    source: str | None
    hidden: Annotated[bool, Field(description="Hidden articles go into no digest.")]


class ArticlePage(Answer):
    items: list[Article]
    next_after_id: NextAfterId


class BadEntry(TypedDict):
    index: Annotated[int, Field(description="Position in the array sent.")]
    error: str


class ImportReport(TypedDict):
    created: int
    updated: int
    unchanged: int
    errors: list[BadEntry]


# A refused import says why, with the report when there was one: the report's keys, each optional.
_REPORT_KEYS = get_type_hints(ImportReport, include_extras=True)
ImportRefused = TypedDict("ImportRefused", {"error": str,
                                           **{name: NotRequired[kind] for name, kind in _REPORT_KEYS.items()}})


class DigestArticle(Answer):
    id: int
    title: str
    url: str
    published_at: datetime | None


class Digest(Answer):
    id: int
    subject: str
    intro: str | None
    status: DigestStatus
    created_at: datetime
    sent_at: datetime | None
    articles: Annotated[list[DigestArticle], Field(description="In the order the digest shows them.")]


Count = Annotated[int, Field(ge=0)]


class DeliveryStatus(Answer):
    model_config = ConfigDict(extra="forbid")

    status: DigestStatus
    total: Count
    pending: Count
    sent: Count
    deferred: Count
    failed: Count
    skipped: Count


class SignupAccepted(Answer):
    status: Literal["ok"]
    message: str


REQUESTS = (Signup, NewSubscriber, ArticleIn, NewDigest)
ANSWERS = (Error, Subscriber, ConsentEvent, SubscriberWithConsent, SubscriberPage, SubscriberCreated, Article,
           ArticlePage, ImportReport, ImportRefused, Digest, DeliveryStatus, SignupAccepted)
