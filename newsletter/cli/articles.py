"""`flask --app wsgi articles ...`: bring the site's articles in."""

from flask.cli import AppGroup

articles_cli = AppGroup("articles", help="Articles: fetch feeds, import files.")
