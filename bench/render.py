"""How fast digest messages are built: the production path against a naive one.

    .venv/bin/python bench/render.py [--subscribers 10000] [--naive 500] [--articles 8] [--dkim]

Production: render_digest once (templates, CSS inlining, encoding), then message_bytes per reader.
Naive: per reader, both templates rendered by Jinja2, CSS inlined by css_inline, the message built
by the email package (compose.build_message) and written with as_bytes(). Both end in the bytes
that would go to the relay. Subscribers are generated (no database rows); the digest and its
articles live in a temporary SQLite database.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from html import unescape
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import css_inline  # noqa: E402
from flask import render_template  # noqa: E402

from newsletter import create_app, tokens  # noqa: E402
from newsletter.extensions import db  # noqa: E402
from newsletter.mail.compose import build_message, deterministic_message_id  # noqa: E402
from newsletter.mail.digest import Recipient, digest_context, one_line, render_digest  # noqa: E402
from newsletter.models import Article  # noqa: E402
from newsletter.services.digests import create_digest  # noqa: E402
from newsletter.urls import absolute_url  # noqa: E402

NOW = datetime(2026, 11, 2, 7, 0, tzinfo=timezone.utc)
NAMES = ["Ada Lovelace", "Grace Hopper", "José Müller", "Zoë Ødegård", None, "Li Wei 李伟", "Ann O'Neil", "Sam"]
PARAGRAPH = ("The council agreed on Tuesday to fund the new cycle lanes along the river, after a year of "
             "consultations and <a href=\"https://example.org/report\">a report</a> that found most "
             "journeys in the city centre are shorter than five kilometres. ")


def subscribers(count: int):
    for i in range(1, count + 1):
        yield i, f"reader{i}@example.com", NAMES[i % len(NAMES)]


def make_app(tmp: Path, dkim_key: Path | None):
    config = {
        "TESTING": True,
        "SECRET_KEY": "bench-secret-key",
        "INSTANCE_DIR": tmp / "instance",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'bench.sqlite'}",
        "BASE_URL": "https://news.example.org",
        "MAIL_FROM": "Example News <news@news.example.org>",
        "SITE_NAME": "Example News",
        "MAIL_POSTAL_ADDRESS": "Example News Ltd, 1 High Street, Springfield",
        "CELERY_BROKER_URL": "memory://",
    }
    if dkim_key:
        config.update(DKIM_SELECTOR="bench", DKIM_DOMAIN="news.example.org", DKIM_PRIVATE_KEY_PATH=str(dkim_key))
    return create_app(config)


def add_articles(count: int, now: datetime = NOW, first_hours_old: int = 0) -> None:
    """`count` articles stored at `now`, published an hour apart, the newest `first_hours_old` hours ago."""
    for i in range(count):
        db.session.add(Article(
            key=f"https://news.example.org/articles/{i}", url=f"https://news.example.org/articles/{i}",
            title=f"Story {i}: the river cycle lanes get their funding — finally ☕",
            summary_html="".join(f"<p>{PARAGRAPH}</p>" for _ in range(2)),
            author="Jane Reporter", image_url=f"https://news.example.org/images/{i}.jpg",
            published_at=now - timedelta(hours=i + first_hours_old), created_at=now, updated_at=now,
        ))
    db.session.commit()


def naive_message(digest, context, headers, subscriber_id, email, name, now) -> bytes:
    """Everything per reader: what the production path avoids."""
    token = tokens.make(tokens.UNSUBSCRIBE, {"s": subscriber_id}, now)
    unsubscribe_url = absolute_url("public.unsubscribe", token=token)
    name = one_line(name or "")
    recipient = Recipient(" " + name if name else "", email, unsubscribe_url)
    html = css_inline.inline(render_template("email/digest.html", **context, recipient=recipient))
    text = render_template("email/digest.txt", **context, recipient=recipient)
    message = build_message(
        to=email, to_name=name or None, subject=context["subject"], text=text, html=html,
        message_id=deterministic_message_id("digest", digest.id, subscriber_id), date=now,
        unsubscribe_url=unsubscribe_url, unsubscribe_token=token,
        headers=headers,
    )
    return message.as_bytes()


def parse(raw: bytes):
    return BytesParser(policy=policy.default).parsebytes(raw)


def measure(build, readers) -> tuple[int, float, int]:
    start = time.perf_counter()
    size = count = 0
    for subscriber_id, email, name in readers:
        size += len(build(subscriber_id, email, name))
        count += 1
    return count, time.perf_counter() - start, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=500, help="readers for the naive path (a sample: it is slow)")
    parser.add_argument("--articles", type=int, default=8)
    parser.add_argument("--dkim", action="store_true", help="sign with a fresh 2048-bit RSA key (both paths)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        key = None
        if args.dkim:
            key = tmp / "dkim.pem"
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        app = make_app(tmp, key)
        with app.app_context():
            db.create_all()
            add_articles(args.articles)
            digest = create_digest(NOW)

            start = time.perf_counter()
            rendered = render_digest(digest, NOW)
            render_seconds = time.perf_counter() - start
            fast = lambda i, e, n: rendered.message_bytes(i, e, n, NOW)  # noqa: E731
            n_fast, fast_seconds, fast_size = measure(fast, subscribers(args.subscribers))
            fast_seconds += render_seconds

            context = digest_context(digest, NOW, rendered.subject)
            headers = dict(rendered.headers)  # List-Id, Feedback-ID, Precedence: constants either way
            sign = rendered._signed  # the same signer for both paths (any message, canonicalised whole)
            slow = lambda i, e, n: sign(naive_message(digest, context, headers, i, e, n, NOW), NOW)  # noqa: E731
            n_slow, slow_seconds, slow_size = measure(slow, subscribers(min(args.naive, args.subscribers)))

            start = time.perf_counter()
            for subscriber_id, _, _ in subscribers(args.subscribers):
                tokens.make(tokens.UNSUBSCRIBE, {"s": subscriber_id}, NOW)
            token_seconds = time.perf_counter() - start

            # The two paths must build the same message, or the comparison means nothing.
            fast_sample, slow_sample = (parse(build(1, "reader1@example.com", "Zoë Ødegård")) for build in (fast, slow))
            for subtype in ("plain", "html"):  # (Jinja2 and css_inline escape quotes differently)
                assert unescape(fast_sample.get_body((subtype,)).get_content()).rstrip() == \
                       unescape(slow_sample.get_body((subtype,)).get_content()).rstrip()
            assert fast_sample["Subject"] == slow_sample["Subject"] and fast_sample["To"] == slow_sample["To"]
            html = fast_sample.get_body(("html",)).get_content()

    fast_rate, slow_rate = n_fast / fast_seconds, n_slow / slow_seconds
    print(f"digest: {args.articles} articles; inlined HTML {len(html) / 1000:.1f} kB; "
          f"average message {fast_size / n_fast / 1000:.1f} kB (naive {slow_size / n_slow / 1000:.1f} kB); "
          f"DKIM {'on' if args.dkim else 'off'}")
    print(f"production: N={n_fast:>6,} in {fast_seconds:7.3f} s = {fast_rate:>9,.0f} messages/s "
          f"(render_digest once: {render_seconds * 1000:.0f} ms, included)")
    note = ("" if n_slow >= args.subscribers
            else f" (a sample: {args.subscribers:,} would take about {args.subscribers / slow_rate:.0f} s)")
    print(f"naive:      N={n_slow:>6,} in {slow_seconds:7.3f} s = {slow_rate:>9,.0f} messages/s{note}")
    print(f"ratio: production / naive = {fast_rate / slow_rate:.1f}x")
    print(f"of the production time per message ({fast_seconds / n_fast * 1e6:.0f} us), the unsubscribe token "
          f"(itsdangerous HMAC) takes {token_seconds / n_fast * 1e6:.0f} us")


if __name__ == "__main__":
    main()
