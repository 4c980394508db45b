"""`flask --app wsgi articles ...`: bring the site's articles in."""

import json
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from ..clock import now
from ..errors import InvalidInput
from ..services import articles, feeds

articles_cli = AppGroup("articles", help="Articles: fetch feeds, import files.")


@articles_cli.command("fetch")
@click.argument("urls", nargs=-1)
def articles_fetch(urls):
    """Fetch RSS/Atom feeds (URLS, or FEED_URLS) and import new and changed articles.

    A 304 Not Modified imports nothing. Exits 1 when a feed could not be fetched or none of its
    entries could be imported; the other feeds are imported all the same.
    """
    if not urls and not current_app.config["FEED_URLS"]:
        raise click.ClickException("No feeds to fetch: give their URLs or set FEED_URLS.")
    reports = feeds.fetch_all(urls, now()) if urls else feeds.fetch_configured(now())
    for report in reports:
        click.echo(report.describe())
    if any(report.failed for report in reports):
        raise SystemExit(1)


@articles_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def articles_import(file):
    """Import FILE, an RSS/Atom feed or a JSON array of articles.

    JSON: [{url, title, summary, author, image_url, published_at}, ...], url and title required,
    summary HTML (sanitised), published_at ISO 8601.

    Bad entries are named (JSON: by array index) and skipped; exits 1 when nothing could be imported.
    """
    content = Path(file).read_bytes()
    source = Path(file).name
    try:
        if content.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{"):
            report = articles.import_json(_json(content), source, now())
        else:
            report = feeds.import_document(content, source, now())
    except InvalidInput as error:
        raise click.ClickException(f"{file}: {error.message}") from None
    click.echo(f"{file}: {report.describe()}")
    if report.all_bad:
        raise SystemExit(1)


def _json(content: bytes):
    try:
        return json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput("file", f"not valid JSON: {error}") from None
