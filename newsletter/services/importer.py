"""Importing a list from another tool (CSV), in batches, with the consent source recorded per row.

`import_subscribers` is the one way in, for the console's upload and `flask subscribers import`.
"""

from __future__ import annotations

import csv
import io
import secrets
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


@dataclass
class ImportReport:
    imported: int = 0
    skipped_existing: int = 0
    skipped_suppressed: int = 0
    skipped_duplicate: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    confirmation_ids: list[int] = field(default_factory=list)  # outbound emails to wake, when pending


def import_subscribers(stream: BinaryIO, consent_source: str, confirmed: bool, now: datetime,
                       progress=None) -> ImportReport:
    """Import a CSV file (bytes, UTF-8). Pending people each get a confirmation email through the
    outbox, written with their batch; the workers are woken after the commits."""
    check_readable_csv(stream)
    handle = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        report = import_csv(handle, consent_source, confirmed, now, progress=progress,
                            queue_confirmation=None if confirmed else subscriptions.queue_confirmation)
    finally:
        handle.detach()  # the stream stays the caller's to close
    for outbound_id in report.confirmation_ids:
        if not enqueue(SEND_OUTBOUND, outbound_id):
            break  # the outbox sweeper sends the rest once the broker is back
    return report


def check_readable_csv(stream: BinaryIO) -> None:
    """Read the whole file once before importing: a file that is not UTF-8 or not CSV must be
    refused before the first batch is committed, not halfway through."""
    def decoded_lines():
        # Line by line, so the message names the line (UTF-8 never has a newline inside a character).
        for number, raw in enumerate(stream, start=1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InvalidInput("file", f"Line {number} of the file is not UTF-8 text. Save the file as "
                                           "“CSV UTF-8” and try again.") from None

    stream.seek(0)
    reader = csv.reader(decoded_lines())
    try:
        for _ in reader:
            pass
    except csv.Error as error:
        raise InvalidInput("file", f"The file is not a readable CSV file (line {reader.line_num}): {error}.") from None
    stream.seek(0)


def _rows(handle: io.TextIOBase):
    reader = csv.DictReader(handle)
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


def import_csv(handle, consent_source: str, confirmed: bool, now: datetime, progress=None,
               queue_confirmation=None) -> ImportReport:
    """Each batch is one transaction: a row is its subscriber and its `imported` consent event
    together, or nothing. `progress(n)` is told how many rows were read."""
    consent_source = (consent_source or "").strip()
    if not consent_source:
        raise InvalidInput("consent_source", "Say where these people gave their consent (--consent-source).")
    report = ImportReport()
    seen: set[str] = set()
    batch: list[tuple[int, str, str | None]] = []
    for line, raw_email, raw_name in _rows(handle):
        try:
            email = normalize_email(raw_email)
            name = clean_name(raw_name)
        except InvalidInput as error:
            report.errors.append((line, error.message))
            continue
        if email in seen:
            report.skipped_duplicate += 1
            continue
        seen.add(email)
        batch.append((line, email, name))
        if len(batch) >= BATCH_SIZE:
            _write_batch(batch, consent_source, confirmed, now, report, queue_confirmation)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        _write_batch(batch, consent_source, confirmed, now, report, queue_confirmation)
        if progress:
            progress(len(batch))
    return report


def _write_batch(batch, consent_source, confirmed, now, report, queue_confirmation) -> None:
    emails = [email for _, email, _ in batch]
    existing = set(db.session.scalars(select(Subscriber.email).where(Subscriber.email.in_(emails))))
    hmacs = {email: suppression.address_hmac(email) for email in emails}
    blocked = suppression.suppressed_hmacs(list(hmacs.values()))
    fresh = []
    for _, email, name in batch:
        if email in existing:
            report.skipped_existing += 1
        elif hmacs[email] in blocked:
            report.skipped_suppressed += 1
        else:
            fresh.append((email, name))
    if not fresh:
        return
    status = SubscriberStatus.CONFIRMED if confirmed else SubscriberStatus.PENDING
    rows = [{"email": email, "name": name, "status": status, "created_at": now,
             "confirmed_at": now if confirmed else None} for email, name in fresh]
    if not confirmed:
        for row in rows:
            row["optin_nonce"] = secrets.token_hex(16)
    # Core executemany (no RETURNING) is what the drivers batch best; ids are read back by email.
    db.session.execute(insert(Subscriber.__table__), rows)
    ids = list(db.session.scalars(select(Subscriber.id).where(Subscriber.email.in_([r["email"] for r in rows]))))
    db.session.execute(insert(ConsentEvent.__table__), [
        {"subscriber_id": subscriber_id, "kind": ConsentKind.IMPORTED, "occurred_at": now,
         "source": consent_source[:512]}
        for subscriber_id in ids
    ])
    if not confirmed and queue_confirmation is not None:
        for subscriber_id in ids:
            report.confirmation_ids.append(queue_confirmation(db.session.get(Subscriber, subscriber_id), now).id)
    db.session.commit()
    report.imported += len(ids)
