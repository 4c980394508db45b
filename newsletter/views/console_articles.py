"""The console's article pages: the list, "fetch feeds now", and hiding an article from digests.

Viewers read; editors fetch and hide. "Fetch feeds now" queues a run for a worker
(services/fetch_runs, which fetches through services/feeds like beat and `articles fetch`) and
sends the editor to the run's page, which reloads itself until the reports are in. Hiding keeps
the row (a later fetch of the same article leaves it hidden).
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from ..auth import requires
from ..clock import now
from ..extensions import db
from ..models import MAX_ID, Article, FeedFetchRun, Role
from ..services import fetch_runs, operators

bp = Blueprint("console_articles", __name__, url_prefix="/console/articles")

PAGE_SIZE = 50
REFRESH_SECONDS = 2  # how often the page of a run still fetching reloads itself (meta refresh: no script)
_SORT_TIME = func.coalesce(Article.published_at, Article.created_at)  # as digests: published, else added


@bp.get("/")
@requires(Role.VIEWER)
def index():
    total, hidden = db.session.execute(
        select(func.count(), func.count().filter(Article.hidden.is_(True))).select_from(Article)
    ).one()
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(_page_arg(), pages)
    # OFFSET is fine here: a site publishes thousands of articles, not millions.
    articles = db.session.scalars(select(Article).order_by(_SORT_TIME.desc(), Article.id.desc())
                                  .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    return render_template("console/articles/index.html", articles=articles, page=page, pages=pages, total=total,
                           hidden=hidden, feed_count=len(current_app.config["FEED_URLS"]))


def _page_arg() -> int:
    value = request.args.get("page", "")
    return int(value) if value.isascii() and value.isdigit() and 0 < len(value) <= 6 and int(value) > 0 else 1


@bp.post("/fetch")
@requires(Role.EDITOR)
def fetch_now():
    urls = current_app.config["FEED_URLS"]
    if not urls:
        flash("No feeds are configured, so there is nothing to fetch: set FEED_URLS (comma-separated feed "
              "addresses) in the environment. Articles can also come in through the API.", "error")
        return redirect(url_for("console_articles.index"))
    run = fetch_runs.request_fetch(current_user, urls, request.remote_addr, now())
    return redirect(url_for("console_articles.fetch_run", run_id=run.id), 303)


@bp.get("/fetch/<int:run_id>")
@requires(Role.VIEWER)
def fetch_run(run_id):
    run = db.session.get(FeedFetchRun, run_id) if run_id <= MAX_ID else None
    if run is None:
        abort(404)
    stale = fetch_runs.is_stale(run, now())
    return render_template("console/articles/fetch.html", run=run, stale=stale,
                           waiting=run.status in fetch_runs.UNFINISHED and not stale,
                           refresh_seconds=REFRESH_SECONDS)


@bp.post("/<int:article_id>/hide")
@requires(Role.EDITOR)
def hide(article_id):
    return _set_hidden(article_id, True)


@bp.post("/<int:article_id>/unhide")
@requires(Role.EDITOR)
def unhide(article_id):
    return _set_hidden(article_id, False)


def _set_hidden(article_id: int, hidden: bool):
    article = db.session.get(Article, article_id) if article_id <= MAX_ID else None
    if article is None:
        abort(404)
    if article.hidden is not hidden:
        article.hidden = hidden
        operators.audit(current_user, "article.hide" if hidden else "article.unhide", f"article:{article_id}",
                        None, request.remote_addr, now())
        db.session.commit()
    if hidden:
        flash(f"“{article.title}” is hidden: digests leave it out from now on.", "notice")
    else:
        flash(f"“{article.title}” can go into digests again.", "notice")
    return redirect(url_for("console_articles.index", page=_page_from_form()))


def _page_from_form() -> int | None:
    value = request.form.get("page", "")
    return int(value) if value.isascii() and value.isdigit() and 0 < len(value) <= 6 and int(value) > 1 else None
