"""The digest message: the fast bytes equal the email package's message, no header injection, DKIM."""

from __future__ import annotations

import base64
import html
import random
import re
import subprocess
from datetime import datetime, timedelta, timezone
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.utils import unquote

import css_inline
import dkim
import pytest
from flask import render_template

from newsletter import create_app, tokens
from newsletter.extensions import db
from newsletter.infra.smtp import DataBytes, data_bytes
from newsletter.mail.compose import address_line, list_unsubscribe_mailto
from newsletter.mail.digest import Recipient, digest_context, render_digest
from newsletter.mail.dkim import DkimConfigurationError, signer_from_config
from newsletter.models import Article, Digest, DigestArticle, DigestStatus
from tests.support.database import mail_config

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
INJECTION = "\r\nBcc: x@y"
UNICODE = "Ünïcødé — ☕"
NAMES = [
    None, "", "Ada Lovelace", 'Ann "Nan" O\'Neil', "Back\\slash, Comma; Semi: colon <angle>", UNICODE,
    "José Müller-Lüdenscheidt von Überwaldhausen zu Sankt Änderungsbedürftigkeitshausen",
    "A perfectly ordinary but very long ASCII display name that will not fit on one line at all",
    "Mallory" + INJECTION, "李伟 " * 20, "  spaced \t out  ", "<b>bold & brash</b>",
]
LOOKS_ENCODED = "=?utf-8?b?QmNjOiB4QHk=?="  # what "Bcc: x@y" looks like as an encoded-word
PARSER = BytesParser(policy=policy.default)


def parse(raw: bytes):
    return PARSER.parsebytes(raw)


@pytest.fixture
def app(tmp_path):
    app = create_app(mail_config(tmp_path))
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()


def make_digest(subject="This week", titles=("First story", "Second story"), summary=None, intro=None) -> Digest:
    digest = Digest(subject=subject, intro=intro, status=DigestStatus.DRAFT, created_at=NOW)
    for position, title in enumerate(titles):
        article = Article(
            key=f"k{position}-{title}", url=f"https://news.example.org/articles/{position}", title=title,
            summary_html=summary or f'<p>About <em>{html.escape(title)}</em>, <a href="/more/{position}">more</a>.</p>',
            author="Jane Reporter", image_url=f"https://news.example.org/img/{position}.jpg",
            published_at=NOW - timedelta(hours=position), created_at=NOW, updated_at=NOW,
        )
        digest.items.append(DigestArticle(article=article, position=position))
    db.session.add(digest)
    db.session.commit()
    return digest


def body(message, subtype) -> str:
    return message.get_body((subtype,)).get_content().replace("\r\n", "\n")


def headers(message) -> list[tuple[str, str]]:
    ignored = {"content-type", "content-transfer-encoding", "to"}  # a random boundary; To: see below
    return sorted((name.lower(), str(value)) for name, value in message.items() if name.lower() not in ignored)


def display_name(raw: bytes) -> str:
    """The To display name as RFC 2047 reads it. (Python's parser keeps the space between two
    encoded-words of a display name, which RFC 2047 says to drop, so it is not used here.)"""
    to = re.search(rb"^To:(.*?)\r\n(?![ \t])", raw, re.MULTILINE | re.DOTALL).group(1).decode("ascii")
    phrase = re.sub(r"\r\n(?=[ \t])", "", to).rpartition("<")[0].strip()
    if phrase.startswith('"'):
        return unquote(phrase)
    return str(make_header(decode_header(phrase)))


def assert_same_message(fast: bytes, reference, name: str | None = None, same_name: bool = True):
    parsed, expected = parse(fast), parse(reference.as_bytes())
    assert headers(parsed) == headers(expected)
    assert parsed["To"].addresses[0].addr_spec == expected["To"].addresses[0].addr_spec
    if same_name:
        assert display_name(fast) == display_name(reference.as_bytes())
    if name is not None:
        assert display_name(fast) == " ".join(re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", name).split())
    assert [part.get_content_type() for part in parsed.walk()] == \
           ["multipart/alternative", "text/plain", "text/html"] == \
           [part.get_content_type() for part in expected.walk()]
    for subtype in ("plain", "html"):
        assert body(parsed, subtype) == body(expected, subtype)
        assert parsed.get_body((subtype,)).get_content_charset() == "utf-8"
    assert parsed.defects == [] and all(part.defects == [] for part in parsed.walk())


@pytest.mark.parametrize("name", NAMES)
def test_fast_bytes_equal_the_email_package_message(app, name):
    rendered = render_digest(make_digest(), NOW)
    fast = rendered.message_bytes(42, "reader@example.com", name, NOW)
    assert_same_message(fast, rendered.message_for(42, "reader@example.com", name, NOW), name or "")


@pytest.mark.parametrize("email", ["a.b+tag@example.com", "o'neil@example.org", "x=y@sub.example.co.uk",
                                   "very.long.local.part.for.testing.folding.of.the.to.header@example.com"])
def test_fast_bytes_equal_for_unusual_addresses(app, email):
    rendered = render_digest(make_digest(), NOW)
    fast = rendered.message_bytes(7, email, "Zoë Ødegård", NOW)
    assert_same_message(fast, rendered.message_for(7, email, "Zoë Ødegård", NOW))
    assert parse(fast)["To"].addresses[0].addr_spec == email


def test_an_internationalised_domain_is_written_in_its_ascii_form(app):
    rendered = render_digest(make_digest(), NOW)
    message = parse(rendered.message_bytes(7, "jo@exämple.org", "Jo", NOW))
    assert message["To"].addresses[0].addr_spec == "jo@xn--exmple-cua.org"
    assert "jo@exämple.org" in body(message, "plain")


@pytest.mark.parametrize("name", NAMES + [LOOKS_ENCODED])
def test_to_header_round_trips_the_display_name(name):
    name = " ".join((name or "").split())
    line = address_line("To", "reader@example.com", name)
    assert line.endswith(b"\r\n") and line.isascii()
    assert all(len(physical) <= 78 for physical in line.split(b"\r\n"))
    (address,) = parse(line + b"\r\n")["To"].addresses
    assert address.addr_spec == "reader@example.com"
    if name:
        assert display_name(line) == name
    if name.isascii():
        assert address.display_name == name


def test_a_name_that_looks_encoded_is_shown_as_written(app):
    # The email package would decode it and write "To: Bcc: x@y <...>"; the fast path does not.
    rendered = render_digest(make_digest(), NOW)
    raw = rendered.message_bytes(1, "reader@example.com", LOOKS_ENCODED, NOW)
    assert parse(raw)["To"].addresses[0].display_name == LOOKS_ENCODED
    assert parse(raw)["Bcc"] is None


def test_every_line_is_short_and_seven_bit(app):
    rendered = render_digest(make_digest(titles=[UNICODE * 30, "x" * 400]), NOW)
    raw = rendered.message_bytes(1, "reader@example.com", UNICODE * 8, NOW)
    assert raw.isascii()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if not line.startswith(b" <mailto:")
               and not line.startswith(b"List-Unsubscribe:"))
    assert all(len(line) <= 76 for line in rest.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_carries_the_bulk_mail_headers(app):
    digest = make_digest()
    rendered = render_digest(digest, NOW)
    message = parse(rendered.message_bytes(42, "reader@example.com", "Ada", NOW))
    assert message["From"] == "Example News <news@news.example.org>"
    assert message["To"] == "Ada <reader@example.com>"
    assert message["Subject"] == "This week"
    assert message["Date"].datetime == NOW
    assert message["Message-ID"] == rendered.message_for(42, "x@example.com", None, NOW)["Message-ID"]
    assert message["Message-ID"] != parse(rendered.message_bytes(43, "reader@example.com", "Ada", NOW))["Message-ID"]
    assert message["List-Id"] == '"Example News" <newsletter.news.example.org>'
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Feedback-ID"] == f"digest-{digest.id}:newsletter:news.example.org"
    assert message["Precedence"] == "bulk"
    assert message["Auto-Submitted"] is None
    assert message["X-Newsletter-Test"] is None
    https, mailto = [part.strip(" <>") for part in str(message["List-Unsubscribe"]).split(",")]
    token = https.rpartition("/")[2]
    assert https == f"https://news.example.org/unsubscribe/{token}"
    assert mailto == list_unsubscribe_mailto(token)
    assert tokens.read(tokens.UNSUBSCRIBE, token, NOW) == {"s": 42}
    assert f'href="{https}"' in body(message, "html") and https in body(message, "plain")


def test_message_id_is_the_same_on_every_render(app):
    digest = make_digest()
    first = parse(render_digest(digest, NOW).message_bytes(5, "reader@example.com", None, NOW))
    again = parse(render_digest(digest, NOW + timedelta(hours=1)).message_bytes(5, "reader@example.com", None, NOW))
    assert first["Message-ID"] == again["Message-ID"]


def test_list_id_setting_wins(tmp_path):
    app = create_app(mail_config(tmp_path, LIST_ID="Weekly <weekly.news.example.org>"))
    with app.app_context():
        db.create_all()
        message = parse(render_digest(make_digest(), NOW).message_bytes(1, "reader@example.com", None, NOW))
    assert message["List-Id"] == "Weekly <weekly.news.example.org>"


def test_test_copy_is_marked_and_never_shares_the_real_message_id(app):
    digest = make_digest()
    real = parse(render_digest(digest, NOW).message_bytes(5, "reader@example.com", None, NOW))
    test = parse(render_digest(digest, NOW, test=True).message_bytes(5, "reader@example.com", None, NOW))
    assert test["Subject"] == "[TEST] This week"
    assert test["X-Newsletter-Test"] == "yes"
    assert test["Message-ID"] != real["Message-ID"]


@pytest.mark.parametrize("where", ["subject", "name", "title"])
def test_line_breaks_and_unicode_never_make_a_header(app, where):
    evil = f"Hello {UNICODE}{INJECTION}"
    digest = make_digest(subject=evil if where == "subject" else "Plain",
                         titles=[evil if where == "title" else "Plain title"])
    if where == "title":
        digest.subject = ""  # falls back to the site name; the title is in the body only
    rendered = render_digest(digest, NOW)
    name = evil if where == "name" else "Reader"
    for raw in (rendered.message_bytes(1, "reader@example.com", name, NOW),
                rendered.message_for(1, "reader@example.com", name, NOW).as_bytes()):
        message = parse(raw)
        assert message["Bcc"] is None
        assert [n.lower() for n in message.keys()].count("to") == 1
        assert message["To"].addresses[0].addr_spec == "reader@example.com"
        if where == "subject":
            assert message["Subject"] == f"Hello {UNICODE} Bcc: x@y"
        if where == "name":
            assert message["To"].addresses[0].display_name == f"Hello {UNICODE} Bcc: x@y"
            assert f"Hello Hello {UNICODE} Bcc: x@y," in body(message, "plain")
        if where == "title":
            assert f"Hello {UNICODE} Bcc: x@y" in body(message, "plain")


def test_html_is_inlined_escaped_absolute_and_script_free(app):
    digest = make_digest(summary='<p>Hi <a href="/relative">there</a><script>alert(1)</script>'
                                 '<a href="javascript:alert(2)">x</a></p>', intro="Welcome!\n\nSecond paragraph.")
    rendered = render_digest(digest, NOW)
    message = parse(rendered.message_bytes(3, "reader@example.com", "<b>Ann & Co</b>", NOW))
    page = body(message, "html")
    assert "<style" not in page.lower() and "<script" not in page.lower() and "javascript:" not in page
    assert 'style="' in page  # the CSS went into the elements
    assert "Hello &lt;b&gt;Ann &amp; Co&lt;/b&gt;," in page
    links = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert links and all(link.startswith("https://") for link in links)
    assert "https://news.example.org/relative" in links
    assert "Second paragraph." in page and "Second paragraph." in body(message, "plain")
    assert "Example News Ltd, 1 High Street, Springfield" in page
    assert "You are receiving this email because reader@example.com subscribed" in " ".join(page.split())


def test_substitution_gives_what_a_full_render_per_reader_gives(app):
    digest = make_digest(intro="Hello there")
    rendered = render_digest(digest, NOW)
    for subscriber_id, email, name in [(1, "a@example.com", 'Ann "Nan" O\'Neil'), (2, "b@example.com", None)]:
        bodies = rendered.personalise(subscriber_id, email, name, NOW)
        recipient = Recipient(" " + name if name else "", email, bodies.unsubscribe_url)
        values = {**digest_context(digest, NOW, rendered.subject), "recipient": recipient}
        naive_html = css_inline.inline(render_template("email/digest.html", **values))
        naive_text = render_template("email/digest.txt", **values)
        assert bodies.text == naive_text.rstrip("\n") + "\n"
        assert html.unescape(bodies.html) == html.unescape(naive_html.rstrip("\n") + "\n")


# --- DKIM ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory):
    path = tmp_path_factory.mktemp("dkim") / "private.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_dkim_signature_verifies_and_covers_the_unsubscribe_headers(tmp_path, rsa_key):
    path, record = rsa_key
    app = create_app(mail_config(tmp_path, DKIM_SELECTOR="mail", DKIM_DOMAIN="news.example.org",
                            DKIM_PRIVATE_KEY_PATH=str(path)))
    lookups = []

    def dns(name, timeout=5):
        lookups.append(name)
        return record

    with app.app_context():
        db.create_all()
        rendered = render_digest(make_digest(subject=f"Signed {UNICODE}"), NOW)
        raw = rendered.message_bytes(9, "reader@example.com", UNICODE, NOW)
    assert raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(raw, dnsfunc=dns)
    assert lookups == [b"mail._domainkey.news.example.org."]
    signature = parse(raw)["DKIM-Signature"]
    signed = {h.strip().lower() for h in re.search(r"h=([^;]+)", str(signature)).group(1).split(":")}
    assert {"from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
            "list-unsubscribe-post"} <= signed
    assert "d=news.example.org" in str(signature) and "s=mail" in str(signature)
    tampered = raw.replace(b"Signed", b"Forged", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_key_is_read_once_per_render(tmp_path, rsa_key, monkeypatch):
    path, _ = rsa_key
    app = create_app(mail_config(tmp_path, DKIM_SELECTOR="mail", DKIM_DOMAIN="news.example.org",
                            DKIM_PRIVATE_KEY_PATH=str(path)))
    with app.app_context():
        db.create_all()
        rendered = render_digest(make_digest(), NOW)
        path.rename(path.with_suffix(".gone"))  # no file any more: signing must not need it
        try:
            for subscriber_id in range(3):
                assert rendered.message_bytes(subscriber_id, "reader@example.com", None, NOW).startswith(b"DKIM-")
        finally:
            path.with_suffix(".gone").rename(path)


def test_dkim_settings_are_all_or_nothing(tmp_path):
    def settings(path):
        return {"DKIM_SELECTOR": "m", "DKIM_DOMAIN": "d.org", "DKIM_PRIVATE_KEY_PATH": str(path)}

    with pytest.raises(DkimConfigurationError, match="together"):
        signer_from_config({"DKIM_SELECTOR": "mail"}, "news.example.org")
    with pytest.raises(DkimConfigurationError, match="Cannot read"):
        signer_from_config(settings(tmp_path / "none"), "d.org")
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(DkimConfigurationError, match="not a PEM"):
        signer_from_config(settings(tmp_path / "bad.pem"), "d.org")
    assert signer_from_config({}, "news.example.org") is None


def test_an_article_hidden_after_composing_is_left_out(app):
    digest = make_digest(titles=("Kept", "Taken down"))
    digest.items[1].article.hidden = True
    db.session.commit()
    message = parse(render_digest(digest, NOW).message_bytes(1, "reader@example.com", None, NOW))
    assert "Kept" in body(message, "plain") and "Taken down" not in body(message, "plain")
    assert "Taken down" not in body(message, "html")


def test_random_values_encode_exactly(app):
    """Subjects, names and titles of every kind of character and length: the same message, one To.

    (The Subject is folded by the email package on both paths; with odd punctuation next to
    non-ASCII it can drop a space at a fold, so only "same on both paths" is asserted for it.)"""
    rng = random.Random(8058)
    alphabet = "abc XYZ.,;:'\"\\<>&=?_-\t\r\n éü☕李€\u00a0\u2028\x85=20=3D"
    for round_ in range(40):
        titles = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 160))) for _ in range(2)]
        subject = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 150)))
        rendered = render_digest(make_digest(subject=subject, titles=titles), NOW)
        for _ in range(5):
            name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 100)))
            fast = rendered.message_bytes(round_, "reader@example.com", name, NOW)
            # (The email package itself loses spaces around some encoded-words: not an oracle for names.)
            assert_same_message(fast, rendered.message_for(round_, "reader@example.com", name, NOW), name,
                                same_name=False)
            assert all(len(line) <= 76 for line in fast.partition(b"\r\n\r\n")[2].split(b"\r\n"))
            assert parse(fast)["Bcc"] is None
            assert "\n" not in parse(fast)["Subject"]
            assert rendered.message_bytes(round_, "reader@example.com", name, NOW, for_data=True) == data_bytes(fast)


@pytest.mark.parametrize("name", [".", "." * 80, "x" * 74 + ".dot after a fold", ".Leading dot", "Ann"])
def test_the_data_form_is_the_message_dot_stuffed_once_per_digest(app, name):
    """What the worker sends (pieces stuffed once per digest, values per reader) equals stuffing
    the whole message, including dots that land at the start of a quoted-printable line."""
    digest = make_digest(titles=[".Dotted title", "." * 200], summary="<p>.</p><p>. and .. and ...</p>",
                         intro=".intro")
    rendered = render_digest(digest, NOW)
    whole = rendered.message_bytes(9, "reader@example.com", name, NOW)
    ready = rendered.message_bytes(9, "reader@example.com", name, NOW, for_data=True)
    assert isinstance(ready, DataBytes)
    assert b"\r\n." in whole  # the case is really here
    assert ready == data_bytes(whole)


def test_a_piece_or_value_that_starts_a_line_with_a_dot_is_stuffed():
    """Every static piece and value of a body starts a line (after a soft break): one that
    begins with a dot must have it doubled, exactly as stuffing the whole body would."""
    from newsletter.mail.compose import BodyTemplate

    template = BodyTemplate(".Start\n{{who}}.\n.middle {{who}}", re.compile(r"\{\{(\w+)\}\}"))
    for value in (".dot", "x" * 74 + ".after a fold", "plain"):
        plain = template.encode({"who": value})
        stuffed = template.encode({"who": value}, stuffed=True)
        assert stuffed + (b"" if plain.endswith(b"\r\n") else b"\r\n") + b".\r\n" == data_bytes(plain)
        assert b"\r\n.." in stuffed and stuffed.startswith(b"..Start")


def test_the_fast_unsubscribe_token_is_itsdangerous_own_byte_for_byte(app):
    rng = random.Random(5)
    for subscriber_id in [0, 1, 255, 256, 65535, 10**9, 2**63 - 1] + [rng.randrange(10**7) for _ in range(50)]:
        for now in (NOW, NOW + timedelta(seconds=1), NOW + timedelta(days=400)):
            token = tokens.unsubscribe_token(subscriber_id, now)
            assert token == tokens.make(tokens.UNSUBSCRIBE, {"s": subscriber_id}, now)
            assert tokens.read(tokens.UNSUBSCRIBE, token, now) == {"s": subscriber_id}
