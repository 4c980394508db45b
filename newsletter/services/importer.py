"""Importing a list from another tool (CSV), in batches, with the consent source recorded per row.

`inspect_csv` refuses a file that cannot be read before anything is written; `read_batches` and
`write_batch` are the batches both ways in share: `flask subscribers import` runs them here, in
`import_subscribers`, and the console's upload in a worker (services/import_jobs), which commits
each batch with its checkpoint so that a run that dies resumes from the last one.
"""

from __future__ import annotations

import codecs
import csv
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

from sqlalchemy import insert, select

from ..errors import InvalidInput
from ..extensions import db
from ..models import ConsentEvent, ConsentKind, Subscriber, SubscriberStatus
from ..queue import SEND_OUTBOUND, enqueue
from ..validation import clean_name, normalize_email
from . import subscriptions, suppression

BATCH_SIZE = 2000
FIELD_LIMIT = csv.field_size_limit()  # the csv module's: a longer value is refused, not read
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # UTF-32's begin with these too
SAVE_AS_UTF8 = "Save the file as “CSV UTF-8” and try again."


@dataclass
class Batch:
    """Up to BATCH_SIZE valid rows not seen before in the file, and what was set aside on the way."""

    rows: list[tuple[int, str, str | None]] = field(default_factory=list)  # (line, email, name)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    duplicates: int = 0
    rows_read: int = 0  # rows of the file read, from the first, through the end of this batch
    last: bool = False


@dataclass
class BatchOutcome:
    imported: int = 0
    skipped_existing: int = 0
    skipped_suppressed: int = 0
    confirmation_ids: list[int] = field(default_factory=list)  # outbound emails to wake after the commit


@dataclass
class ImportReport:
    imported: int = 0
    skipped_existing: int = 0
    skipped_suppressed: int = 0
    skipped_duplicate: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    def add(self, batch: Batch, outcome: BatchOutcome) -> None:
        self.imported += outcome.imported
        self.skipped_existing += outcome.skipped_existing
        self.skipped_suppressed += outcome.skipped_suppressed
        self.skipped_duplicate += batch.duplicates
        self.errors.extend(batch.bad_rows)


def import_subscribers(stream: BinaryIO, consent_source: str, confirmed: bool, now: datetime,
                       progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import a CSV file (bytes, UTF-8) here and now, a transaction per batch. Pending people each
    get a confirmation email through the outbox, written with their batch; the workers are woken
    after each commit. `progress(n)` is told how many more rows of the file were read."""
    consent_source = required_consent_source(consent_source)
    inspect_csv(stream)
    report, done = ImportReport(), 0
    for batch in read_batches(stream):
        outcome = write_batch(batch.rows, consent_source, confirmed, now)
        db.session.commit()
        report.add(batch, outcome)
        wake_confirmations(outcome.confirmation_ids)
        if progress:
            progress(batch.rows_read - done)
        done = batch.rows_read
    return report


def required_consent_source(consent_source: str | None) -> str:
    consent_source = (consent_source or "").strip()
    if not consent_source:
        raise InvalidInput("consent_source", "Say where these people gave their consent (--consent-source).")
    return consent_source


def inspect_csv(stream: BinaryIO) -> int:
    """Read the whole file once, before anything is imported: a file that is not UTF-8, not CSV or
    without an `email` column is refused before the first batch is written, not halfway through.
    Returns the number of rows after the header (a quoted value spanning lines is one row)."""
    stream.seek(0)
    head = stream.read(4096)
    if head.startswith(UTF16_BOMS) or b"\x00" in head.split(b"\n", 1)[0]:
        raise InvalidInput("file", f"The file is UTF-16 text, not UTF-8. {SAVE_AS_UTF8}")
    stream.seek(0)
    rows = sum(1 for _ in _records(_decoded_lines(stream)))
    stream.seek(0)
    return rows


def read_batches(stream: BinaryIO, skip_rows: int = 0) -> Iterator[Batch]:
    """The file's rows in batches; the last one (perhaps empty) says so. The first `skip_rows` rows,
    imported by an earlier run, are read again only to know which addresses the file already had."""
    stream.seek(0)
    seen: set[str] = set()
    batch, rows_read = Batch(), 0
    for line, raw_email, raw_name in _records(_decoded_lines(stream)):
        rows_read += 1
        done_before = rows_read <= skip_rows
        try:
            email = normalize_email(raw_email)
            name = clean_name(raw_name)
        except InvalidInput as error:
            if not done_before:
                batch.bad_rows.append((line, error.message))
            continue
        if email in seen:
            if not done_before:
                batch.duplicates += 1
            continue
        seen.add(email)
        if done_before:
            continue
        batch.rows.append((line, email, name))
        if len(batch.rows) >= BATCH_SIZE:
            batch.rows_read = rows_read
            yield batch
            batch = Batch()
    batch.rows_read, batch.last = rows_read, True
    yield batch


def write_batch(rows: list[tuple[int, str, str | None]], consent_source: str, confirmed: bool,
                now: datetime) -> BatchOutcome:
    """One batch into the caller's transaction (the caller commits): a row is its subscriber, its
    `imported` consent event and, when pending, its confirmation email, or nothing."""
    outcome = BatchOutcome()
    emails = [email for _, email, _ in rows]
    existing = set(db.session.scalars(select(Subscriber.email).where(Subscriber.email.in_(emails)))) if rows else set()
    hmacs = {email: suppression.address_hmac(email) for email in emails}
    blocked = suppression.suppressed_hmacs(list(hmacs.values())) if rows else set()
    fresh = []
    for _, email, name in rows:
        if email in existing:
            outcome.skipped_existing += 1
        elif hmacs[email] in blocked:
            outcome.skipped_suppressed += 1
        else:
            fresh.append((email, name))
    if not fresh:
        return outcome
    status = SubscriberStatus.CONFIRMED if confirmed else SubscriberStatus.PENDING
    values = [{"email": email, "name": name, "status": status, "created_at": now,
               "confirmed_at": now if confirmed else None} for email, name in fresh]
    if not confirmed:
        for row in values:
            row["optin_nonce"] = secrets.token_hex(16)
    # Core executemany (no RETURNING) is what the drivers batch best; the rows are read back by email.
    db.session.execute(insert(Subscriber.__table__), values)
    people = db.session.scalars(select(Subscriber).where(Subscriber.email.in_([e for e, _ in fresh]))).all()
    db.session.execute(insert(ConsentEvent.__table__), [
        {"subscriber_id": person.id, "kind": ConsentKind.IMPORTED, "occurred_at": now, "source": consent_source[:512]}
        for person in people
    ])
    if not confirmed:
        outcome.confirmation_ids = [subscriptions.queue_confirmation(person, now).id for person in people]
    outcome.imported = len(people)
    return outcome


def wake_confirmations(outbound_ids: Iterable[int]) -> None:
    for outbound_id in outbound_ids:
        if not enqueue(SEND_OUTBOUND, outbound_id):
            break  # the outbox sweeper sends the rest once the broker is back


def _decoded_lines(stream: BinaryIO) -> Iterator[str]:
    # Line by line, so the message names the line (UTF-8 never has a newline inside a character).
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("file", f"Line {number} of the file is not UTF-8 text. {SAVE_AS_UTF8}") from None


def _records(lines: Iterable[str]) -> Iterator[tuple[int, str | None, str | None]]:
    """(the line a row starts on, its raw email, its raw name) for each row after the header."""
    reader = csv.DictReader(lines)
    try:
        if reader.fieldnames is None:
            raise InvalidInput("file", "The file is empty: expected a header line with an 'email' column.")
        columns = {name.strip().lower(): name for name in reader.fieldnames if name}
        if "email" not in columns:
            raise InvalidInput("file", f"No 'email' column in the header (found: {', '.join(reader.fieldnames)}).")
        email_col, name_col = columns["email"], columns.get("name")
        start = reader.line_num + 1
        for row in reader:
            # A quoted field may span lines: report the line the row starts on.
            yield start, row.get(email_col), row.get(name_col) if name_col else None
            start = reader.line_num + 1
    except csv.Error as error:
        hint = (f" A value is longer than {FIELD_LIMIT:,} characters, or a quote left open runs on through the "
                "lines after it." if "field larger than field limit" in str(error) else "")
        line = reader.reader.line_num  # DictReader's own line_num is set only after a row was read
        raise InvalidInput("file", f"The file is not a readable CSV file (line {line}): {error}.{hint}") from None
