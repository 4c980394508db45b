"""`flask --app wsgi digest ...`: compose, preview and test-send digests."""

from flask.cli import AppGroup

digest_cli = AppGroup("digest", help="Digests: create, preview, test-send.")
