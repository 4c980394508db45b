"""The console's CSV import in tests without a worker process: the job a worker would run, run here."""

from __future__ import annotations

import re

from flask import current_app

from newsletter.clock import now
from newsletter.services import import_jobs

JOB_PAGE = re.compile(r"/console/subscribers/imports/(\d+)$")


def job_id_of(location: str) -> int:
    match = JOB_PAGE.search(location)
    assert match, location
    return int(match.group(1))


def run_import_and_open_its_page(client, location: str):
    """What the worker does with the job the upload created (the app's clock), then the job's page."""
    app = client.application
    with app.app_context():
        assert import_jobs.run_job(job_id_of(location), lambda: now()) is not None
        assert current_app  # the run needed the app, as the worker's task has it
    return client.get(location)
