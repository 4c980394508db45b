"""The development mail viewer: what the local SMTP sink received, readable in the browser.

Registered only in debug or with DEV_MAIL_VIEWER=1; never part of a production deployment.
"""

import re
from email import policy
from email.parser import BytesParser

from flask import Blueprint, abort, current_app, render_template

bp = Blueprint("devmail", __name__, url_prefix="/dev/mail")

_NAME = re.compile(r"^[\w.-]+\.eml$")
_URL = re.compile(r"https?://[^\s<>\"')]+")


def _messages():
    folder = current_app.config["DEV_MAIL_DIR"]
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.eml"), key=lambda p: p.name, reverse=True)


def _parse(path):
    with path.open("rb") as fh:
        return BytesParser(policy=policy.default).parse(fh)


@bp.get("/")
def index():
    messages = [(path.name, _parse(path)) for path in _messages()[:200]]
    return render_template("dev/mail_index.html", messages=messages)


@bp.get("/<name>")
def show(name):
    path = current_app.config["DEV_MAIL_DIR"] / name
    if not _NAME.match(name) or not path.is_file():
        abort(404)
    message = _parse(path)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    text = text_part.get_content() if text_part else ""
    return render_template("dev/mail_show.html", name=name, message=message, text=text,
                           html=html_part.get_content() if html_part else None,
                           links=list(dict.fromkeys(_URL.findall(text))))
