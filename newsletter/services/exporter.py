"""Every subscriber as a CSV file: an audited disclosure, streamed a batch at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ..extensions import db
from ..models import Operator, Subscriber
from . import operators
from ..times import iso_z

EXPORT_BATCH = 1000  # rows per fetch from the database and per chunk of the file
EXPORT_COLUMNS = ("email", "name", "status", "created_at", "confirmed_at", "unsubscribed_at")
# A cell starting with one of these is a formula to Excel and LibreOffice (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_subscribers(by: Operator, ip: str | None, now: datetime) -> Iterator[str]:
    """The file's chunks. The export is audited and committed before the first row is read."""
    total = db.session.scalar(select(func.count()).select_from(Subscriber))
    operators.audit(by, "subscribers.export", None, {"rows": total}, ip, now)
    db.session.commit()
    return _csv_chunks(db.engine)


def _csv_chunks(engine: Engine) -> Iterator[str]:
    """Reads through a connection of its own, not the session: a response streaming the file
    outlives its request, and a download abandoned midway just closes the generator, and with it
    the connection."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    query = (select(Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.created_at,
                    Subscriber.confirmed_at, Subscriber.unsubscribed_at).order_by(Subscriber.id))
    with engine.connect() as connection:
        # yield_per streams from the database (a server-side cursor on PostgreSQL): one batch in memory.
        result = connection.execution_options(yield_per=EXPORT_BATCH).execute(query)
        for batch in result.partitions():
            for row in batch:
                writer.writerow((row.email, _cell(row.name), row.status.value, (iso_z(row.created_at) or ""),
                                 (iso_z(row.confirmed_at) or ""), (iso_z(row.unsubscribed_at) or "")))
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _cell(text: str | None) -> str:
    """Free text a stranger typed (the name) cannot become a spreadsheet formula."""
    if not text:
        return ""
    return "'" + text if text.startswith(FORMULA_START) else text

