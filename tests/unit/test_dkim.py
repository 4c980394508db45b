"""DKIM: the digest's per-reader signatures (RSA and Ed25519) verify with dkimpy, equal signing the
whole message, cover exactly the header list, and break when anything signed changes. Message-IDs
are keyed per install."""

from __future__ import annotations

import random
import re
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed

from newsletter import create_app
from newsletter.extensions import db
from newsletter.infra.smtp import data_bytes
from newsletter.mail import compose
from newsletter.mail.digest import render_digest
from newsletter.mail.dkim import (
    SIGNED_HEADERS,
    BodyHashTemplate,
    DkimConfigurationError,
    relaxed_body,
    relaxed_header,
    signer_from_config,
)
from newsletter.models import Article, Digest, DigestArticle, DigestStatus
from tests.support.database import mail_config

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
NAMES = [None, "Ada Lovelace", 'Ann "Nan" O\'Neil', "Ünïcødé — ☕", "  spaced \t out  ", "Mallory\r\nBcc: x@y",
         "A perfectly ordinary but very long ASCII display name that will not fit on one line at all", "李伟 " * 20]


@pytest.fixture
def app(tmp_path, dkim_keys):
    app = create_app(mail_config(tmp_path, **dkim_keys.settings()))
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()


def make_digest(subject="This week", titles=("First story", "Second story"), intro=None) -> Digest:
    digest = Digest(subject=subject, intro=intro, status=DigestStatus.DRAFT, created_at=NOW)
    for position, title in enumerate(titles):
        article = Article(
            key=f"k{position}-{title}", url=f"https://news.example.org/articles/{position}", title=title,
            summary_html=f"<p>About  {title}, \t with  runs of\tspace  .</p><p>.dot</p>", author="Jane Reporter",
            published_at=NOW - timedelta(hours=position), created_at=NOW, updated_at=NOW,
        )
        digest.items.append(DigestArticle(article=article, position=position))
    db.session.add(digest)
    db.session.commit()
    return digest


def without_signatures(raw: bytes) -> bytes:
    return re.sub(rb"\ADKIM-Signature:.*?\r\n(?![ \t])DKIM-Signature:.*?\r\n(?![ \t])", b"", raw, flags=re.DOTALL)


def signature_tags(raw: bytes) -> list[dict[str, str]]:
    fields = re.findall(rb"^DKIM-Signature:(.*?)\r\n(?![ \t])", raw, re.MULTILINE | re.DOTALL)
    return [dict(tag.strip().split("=", 1) for tag in re.sub(r"\s+", " ", f.decode()).split(";") if tag.strip())
            for f in fields]


@pytest.mark.parametrize("name", NAMES)
def test_each_reader_gets_an_rsa_and_an_ed25519_signature_that_dkimpy_verifies(app, dkim_keys, name):
    rendered = render_digest(make_digest(subject="Signed Ünïcødé"), NOW)
    raw = rendered.message_bytes(9, "reader@example.com", name, NOW)
    assert dkim_keys.verified(raw) == ["rsa-sha256", "ed25519-sha256"]
    assert rendered.message_bytes(9, "reader@example.com", name, NOW, for_data=True) == data_bytes(raw)


def test_the_signatures_name_the_domain_selectors_and_exactly_the_signed_header_list(app, dkim_keys):
    raw = render_digest(make_digest(), NOW).message_bytes(1, "reader@example.com", "Ada", NOW)
    rsa_tags, ed_tags = signature_tags(raw)
    for tags, algorithm, selector in ((rsa_tags, "rsa-sha256", "mail"), (ed_tags, "ed25519-sha256", "mail-ed25519")):
        assert (tags["a"], tags["s"], tags["d"], tags["c"]) == (algorithm, selector, "news.example.org",
                                                                "relaxed/relaxed")
        assert [h.strip() for h in tags["h"].split(":")] == [h.decode() for h in SIGNED_HEADERS]
        assert tags["t"] == str(int(NOW.timestamp()))
    assert all(len(line) <= 78 for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")
               if not line.startswith((b"List-Unsubscribe:", b" <mailto:")))


def test_the_per_reader_signature_equals_signing_the_whole_message(app):
    """Canonicalising once per digest and per value must give what canonicalising the whole
    message gives: RSA PKCS#1 v1.5 and Ed25519 are deterministic, so the bytes are equal."""
    rng = random.Random(6376)
    alphabet = "abc XYZ.,;:'\"\\<>&=?_-\t  éü☕李€\u00a0=20=3D"
    rendered = render_digest(make_digest(titles=["".join(rng.choice(alphabet) for _ in range(120))],
                                         intro="Hello  there\t \n\nsecond  paragraph  "), NOW)
    for round_ in range(30):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        raw = rendered.message_bytes(round_, f"r{round_}@example.com", name, NOW + timedelta(seconds=round_))
        assert rendered.signer.sign(without_signatures(raw), NOW + timedelta(seconds=round_)) == raw


@pytest.mark.parametrize("change", [
    (b"To: ", b"To: x"), (b"unsubscribe/", b"unsubscribe/x"), (b"unsubscribe%20", b"unsubscribe%20x"),
    (b"Message-ID: <", b"Message-ID: <x"), (b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Two-Clicks"),
    (b"Subject: This week", b"Subject: This weak"), (b"First story", b"Forged story"),
    (b"Jane Reporter", b"Jane Forger"),
])
def test_changing_anything_signed_breaks_both_signatures(app, dkim_keys, change):
    raw = render_digest(make_digest(), NOW).message_bytes(3, "reader@example.com", "Ada", NOW)
    unsigned = without_signatures(raw)
    old, new = change
    assert old in unsigned and all(dkim_keys.verifies(raw, index) for index in range(2))
    tampered = raw[:len(raw) - len(unsigned)] + unsigned.replace(old, new, 1)
    assert not any(dkim_keys.verifies(tampered, index) for index in range(2))


def test_a_non_ascii_local_part_is_signed_too(app, dkim_keys):
    rendered = render_digest(make_digest(), NOW)
    raw = rendered.message_bytes(4, "jö@exämple.org", "Jö", NOW)
    assert dkim_keys.verified(raw) == ["rsa-sha256", "ed25519-sha256"]


def test_rsa_alone_signs_once(tmp_path, dkim_keys):
    app = create_app(mail_config(tmp_path, **dkim_keys.settings(ed25519=False)))
    with app.app_context():
        db.create_all()
        raw = render_digest(make_digest(), NOW).message_bytes(1, "reader@example.com", None, NOW)
    assert dkim_keys.verified(raw) == ["rsa-sha256"]


@pytest.mark.parametrize("chunk", [
    b"", b"a", b"a \r\n", b"a  b\t\tc \t\r\n", b"\r\n\r\n", b"x\r\n\r\n \r\n\t\r\n", b" lead\r\ntrail \t",
    b"=\r\n  =20\t=\r\n", b"line\r\n\r\nnext\r\n\r\n\r\n",
])
def test_relaxed_canonicalisation_agrees_with_dkimpy(chunk):
    assert relaxed_body(chunk) == Relaxed.canonicalize_body(chunk)
    field = b"Subject:" + chunk.replace(b"\r\n", b"\r\n ") + b"\r\n"
    ((name, value),) = Relaxed.canonicalize_headers([(b"Subject", field[len(b"Subject:"):])])
    assert relaxed_header(field) == name + b":" + value


def test_relaxed_canonicalisation_agrees_with_dkimpy_on_random_bodies():
    rng = random.Random(4871)
    for _ in range(300):
        body = b"".join(rng.choice([b" ", b"\t", b"\r\n", b"a", b"=", b".", b"  "]) for _ in range(rng.randint(0, 40)))
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body


@pytest.mark.parametrize("parts", [
    [b"fixed ", "value", b"=\r\n"],  # a value that does not start a line
    [b"fixed\r\n", "value", b" more\r\n"],  # fixed bytes after a value that start with a space
    [b"fixed\r\n", "value", b"\r\n"],  # ... or with CR
    [b"fixed\r\n", "a", "b", b"x\r\n"],  # two values with nothing between
    [b"fixed\r\n", "value"],  # a body that ends in a value
    [b"fixed\r\n", "value", b"=\r\n\r\n"],  # an empty line at the end
])
def test_a_body_template_refuses_cuts_that_canonicalise_differently(parts):
    with pytest.raises(ValueError):
        BodyHashTemplate(parts)


def test_a_body_template_hashes_what_the_whole_body_hashes():
    import hashlib

    template = BodyHashTemplate([b"Hello  \t=\r\n", "name", b"=\r\n, and  \r\nbye \t\r\n--end--\r\n"])
    for name in (b"Ada", b"  two  spaces  ", b"\tx=\r\n y \t", b""):
        whole = b"Hello  \t=\r\n" + name + b"=\r\n, and  \r\nbye \t\r\n--end--\r\n"
        assert template.digest({"name": name}) == hashlib.sha256(Relaxed.canonicalize_body(whole)).digest()


def test_dkim_settings_refuse_what_cannot_sign(tmp_path, dkim_keys):
    good = dkim_keys.settings()
    with pytest.raises(DkimConfigurationError, match="beside the RSA key"):
        signer_from_config({"DKIM_ED25519_PRIVATE_KEY_PATH": good["DKIM_ED25519_PRIVATE_KEY_PATH"]}, "news.example.org")
    with pytest.raises(DkimConfigurationError, match="must differ"):
        signer_from_config({**good, "DKIM_ED25519_SELECTOR": "mail"}, "news.example.org")
    with pytest.raises(DkimConfigurationError, match="not a PEM RSA private key"):
        signer_from_config({**good, "DKIM_PRIVATE_KEY_PATH": good["DKIM_ED25519_PRIVATE_KEY_PATH"]}, "d.org")
    with pytest.raises(DkimConfigurationError, match="not a PEM Ed25519 private key"):
        signer_from_config({**good, "DKIM_ED25519_PRIVATE_KEY_PATH": good["DKIM_PRIVATE_KEY_PATH"]}, "d.org")
    with pytest.raises(DkimConfigurationError, match="Cannot read"):
        signer_from_config({**good, "DKIM_ED25519_PRIVATE_KEY_PATH": str(tmp_path / "none")}, "d.org")
    small = tmp_path / "small.pem"  # (the cryptography package will not make one this small)
    subprocess.run(["openssl", "genrsa", "-out", str(small), "512"], check=True, capture_output=True)
    with pytest.raises(DkimConfigurationError, match="512 bits"):
        signer_from_config({**good, "DKIM_PRIVATE_KEY_PATH": str(small)}, "d.org")


def test_an_ed25519_seed_as_dkimpy_writes_it_is_accepted(tmp_path, dkim_keys):
    import base64

    key = ed25519.Ed25519PrivateKey.generate()
    seed = tmp_path / "ed25519.key"
    seed.write_bytes(base64.b64encode(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                        serialization.NoEncryption())) + b"\n")
    config = {**dkim_keys.settings(), "DKIM_ED25519_PRIVATE_KEY_PATH": str(seed)}
    signer = signer_from_config(config, "news.example.org")
    assert [k.algorithm for k in signer.keys] == [b"rsa-sha256", b"ed25519-sha256"]


def test_a_replaced_key_file_is_read_again(tmp_path, dkim_keys):
    path = tmp_path / "rotating.pem"
    path.write_bytes(dkim_keys.rsa_path.read_bytes())
    config = {**dkim_keys.settings(ed25519=False), "DKIM_PRIVATE_KEY_PATH": str(path)}
    first = signer_from_config(config, "news.example.org")
    assert signer_from_config(config, "news.example.org") is first  # not read per message
    path.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert signer_from_config(config, "news.example.org") is not first


# --- Message-IDs --------------------------------------------------------------------------------


def message_id(tmp_path, name, **extra) -> str:
    app = create_app(mail_config(tmp_path / name, **extra))
    with app.app_context():
        return compose.deterministic_message_id("digest", 1, 1)


def test_message_ids_are_stable_per_install_and_differ_between_installs(tmp_path):
    ours = message_id(tmp_path, "a")
    assert message_id(tmp_path, "b") == ours  # the same key: the same id, on every render and retry
    assert message_id(tmp_path, "c", SECRET_KEY="another-install") != ours
    assert message_id(tmp_path, "d", MESSAGE_ID_KEY="its-own-key") != ours
    assert message_id(tmp_path, "e", SECRET_KEY="another-install", MESSAGE_ID_KEY="test-secret-key") == ours
    assert re.fullmatch(r"<[0-9a-f]{32}@news\.example\.org>", ours)


def test_a_dkim_key_that_cannot_sign_stops_the_start(tmp_path, dkim_keys):
    from newsletter import InsecureConfiguration

    with pytest.raises(InsecureConfiguration, match="DKIM: Cannot read the DKIM key"):
        create_app(mail_config(tmp_path, **{**dkim_keys.settings(), "DKIM_PRIVATE_KEY_PATH": str(tmp_path / "none")}))
    with pytest.raises(InsecureConfiguration, match="DKIM: DKIM needs DKIM_SELECTOR"):
        create_app(mail_config(tmp_path, DKIM_SELECTOR="mail"))
    assert create_app(mail_config(tmp_path, **dkim_keys.settings()))


@pytest.mark.parametrize("name,value", [("DKIM_SELECTOR", "mäil"), ("DKIM_DOMAIN", "news example.org"),
                                        ("DKIM_ED25519_SELECTOR", "mail;x=1")])
def test_selectors_and_domain_must_be_dns_names(dkim_keys, name, value):
    with pytest.raises(DkimConfigurationError, match=f"{name} must be a DNS name"):
        signer_from_config({**dkim_keys.settings(), name: value}, "news.example.org")
