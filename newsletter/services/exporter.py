"""CSV files out: every subscriber (an audited disclosure, streamed a batch at a time) and the bad
rows of an import. Every cell of every one goes through `formula_safe`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ..extensions import db
from ..models import ImportBadRow, Operator, Subscriber
from ..times import iso_z
from . import operators

EXPORT_BATCH = 1000  # rows per fetch from the database and per chunk of the file
EXPORT_COLUMNS = ("email", "name", "status", "created_at", "confirmed_at", "unsubscribed_at")
# A cell starting with one of these is a formula to Excel and LibreOffice (CSV injection, OWASP).
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
    writer = SafeWriter(buffer)
    writer.writerow(EXPORT_COLUMNS)
    query = (select(Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.created_at,
                    Subscriber.confirmed_at, Subscriber.unsubscribed_at).order_by(Subscriber.id))
    with engine.connect() as connection:
        # yield_per streams from the database (a server-side cursor on PostgreSQL): one batch in memory.
        result = connection.execution_options(yield_per=EXPORT_BATCH).execute(query)
        for batch in result.partitions():
            for row in batch:
                writer.writerow((row.email, row.name, row.status.value, iso_z(row.created_at),
                                 iso_z(row.confirmed_at), iso_z(row.unsubscribed_at)))
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def bad_rows_csv(job_id: int) -> str:
    """The rows an import set aside, by line: what the operator fixes before importing them again."""
    buffer = io.StringIO()
    writer = SafeWriter(buffer)
    writer.writerow(("line", "reason"))
    writer.writerows(db.session.execute(select(ImportBadRow.line, ImportBadRow.reason)
                                        .where(ImportBadRow.job_id == job_id).order_by(ImportBadRow.line)))
    return buffer.getvalue()


class SafeWriter:
    """csv.writer with every cell made safe to open in a spreadsheet: no export can forget one."""

    def __init__(self, buffer: io.StringIO):
        self._writer = csv.writer(buffer)

    def writerow(self, cells: Iterable) -> None:
        self._writer.writerow([formula_safe(cell) for cell in cells])

    def writerows(self, rows: Iterable[Iterable]) -> None:
        for row in rows:
            self.writerow(row)


def formula_safe(cell) -> str:
    """Text anyone could have typed (an address such as `=1+2@example.com` is valid) cannot become a
    spreadsheet formula: a leading apostrophe makes it text. None is an empty cell."""
    if cell is None:
        return ""
    text = str(cell)
    return "'" + text if text.startswith(FORMULA_START) else text
