"""`subscribers import FILE.csv`: batched, consent source recorded, bad rows named by line."""

import codecs

import pytest
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import ConsentEvent, ConsentKind, OutboundEmail, Subscriber, SubscriberStatus
from newsletter.services.suppression import suppress
from tests.support.imports import MIXED_ROWS


def write(tmp_path, text, name="list.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_import_records_consent_source_and_reports_bad_rows_by_line(app, runner, tmp_path, clock):
    with app.app_context():
        suppress("gone@example.com", "hard-bounce", clock())
        db.session.add(Subscriber(email="known@example.com", status=SubscriberStatus.CONFIRMED, created_at=clock()))
        db.session.commit()
    csv_file = write(tmp_path, MIXED_ROWS)
    result = runner.invoke(args=["subscribers", "import", csv_file, "--consent-source", "Old list, 2025 form", "--confirmed"])
    assert result.exit_code == 1
    assert "Imported 2 (confirmed)" in result.output
    assert "skipped 1 already present, 1 suppressed, 1 repeated in the file; 2 bad rows" in result.output
    assert "line 3: That email address is not valid" in result.output
    assert "line 7: Line breaks" in result.output  # the row that starts on line 7
    with app.app_context():
        ada = db.session.scalar(select(Subscriber).where(Subscriber.email == "ada@example.com"))
        assert ada.status is SubscriberStatus.CONFIRMED and ada.name == "Ada Lovelace"
        assert [(e.kind, e.source) for e in ada.events] == [(ConsentKind.IMPORTED, "Old list, 2025 form")]
        assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 3
        assert db.session.scalar(select(func.count()).select_from(OutboundEmail)) == 0


def test_import_without_confirmed_makes_pending_subscribers_with_a_confirmation_each(app, runner, tmp_path):
    csv_file = write(tmp_path, "email\nnew1@example.com\nnew2@example.com\n")
    result = runner.invoke(args=["subscribers", "import", csv_file, "--consent-source", "paper form"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        statuses = set(db.session.scalars(select(Subscriber.status)))
        assert statuses == {SubscriberStatus.PENDING}
        assert db.session.scalar(select(func.count()).select_from(OutboundEmail)) == 2


def test_import_refuses_a_file_without_email_column_and_changes_nothing(app, runner, tmp_path):
    csv_file = write(tmp_path, "mail,name\na@example.com,A\n")
    result = runner.invoke(args=["subscribers", "import", csv_file, "--consent-source", "x"])
    assert result.exit_code != 0 and "No 'email' column" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == 0


def test_import_needs_a_consent_source(app, runner, tmp_path):
    csv_file = write(tmp_path, "email\na@example.com\n")
    assert runner.invoke(args=["subscribers", "import", csv_file]).exit_code != 0
    result = runner.invoke(args=["subscribers", "import", csv_file, "--consent-source", "  "])
    assert result.exit_code != 0 and "consent" in result.output


def test_import_refuses_a_file_that_is_not_utf8_and_imports_nothing(app, runner, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,name\nada@example.com,Ada\nbo@example.com,Bo Lindstr\u00f6m\n".encode("latin-1"))
    result = runner.invoke(args=["subscribers", "import", str(path), "--consent-source", "x"])
    assert result.exit_code == 1 and "Line 3 of the file is not UTF-8 text" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 0


def assert_refused_cleanly(app, result, message):
    assert result.exit_code == 1, result.output
    assert f"Error: {message}" in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert "Importing" not in result.output  # refused before the progress bar, and before any batch
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 0


UTF16_REFUSED = "The file is UTF-16 text, not UTF-8. Save the file as “CSV UTF-8” and try again."


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-16-le"])  # BOM first; none (Excel's "Unicode")
def test_import_refuses_a_utf16_file_with_a_clear_message(app, runner, tmp_path, encoding):
    path = tmp_path / "utf16.csv"
    content = "email,name\nada@example.com,Ada\n".encode(encoding)
    path.write_bytes(content if encoding != "utf-16-be" else codecs.BOM_UTF16_BE + content)
    result = runner.invoke(args=["subscribers", "import", str(path), "--consent-source", "x"])
    assert_refused_cleanly(app, result, UTF16_REFUSED)


def test_import_refuses_a_latin1_file_naming_the_line(app, runner, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(("email,name\n" + "".join(f"r{n}@example.com,R\n" for n in range(2500))
                      + "zoe@example.com,Zo\u00eb\n").encode("latin-1"))
    result = runner.invoke(args=["subscribers", "import", str(path), "--consent-source", "x"])
    assert_refused_cleanly(app, result, "Line 2502 of the file is not UTF-8 text. Save the file as “CSV UTF-8”")


@pytest.mark.parametrize("field", ["x" * 200_000, '"' + "x" * 200_000 + '"', '"Bob\n' + "x" * 200_000])
def test_import_refuses_a_200000_character_field_with_a_clear_message(app, runner, tmp_path, field):
    csv_file = write(tmp_path, "email,name\nada@example.com,Ada\nbob@example.com," + field + "\n")
    result = runner.invoke(args=["subscribers", "import", csv_file, "--consent-source", "x"])
    assert_refused_cleanly(app, result, "The file is not a readable CSV file (line ")
    assert "field larger than field limit (131072). A value is longer than 131,072 characters" in result.output
