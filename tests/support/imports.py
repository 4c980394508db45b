"""The console's CSV import in tests: the upload through the real form, and the job a worker would
run, run in this process (integration tests have no worker; tests/e2e have real ones)."""

from __future__ import annotations

import io
import re

from newsletter.clock import now
from newsletter.services import import_jobs

from .forms import form_fields

JOB_PAGE = re.compile(r"/console/subscribers/imports/(\d+)$")


def post_import(client, content: bytes | str, source="Old list, 2025 form", confirmed=True, filename="list.csv"):
    token = form_fields(client.get("/console/subscribers/import").get_data(as_text=True))["csrf_token"]
    data = {"csrf_token": token, "consent_source": source,
            "file": (io.BytesIO(content.encode() if isinstance(content, str) else content), filename)}
    if confirmed:
        data["confirmed"] = "yes"
    return client.post("/console/subscribers/import", data=data, content_type="multipart/form-data")


def job_id_of(location: str) -> int:
    match = JOB_PAGE.search(location)
    assert match, location
    return int(match.group(1))


def run_import_and_open_its_page(client, location: str):
    """What the worker does with the job the upload created (on the app's clock), then the job's page."""
    with client.application.app_context():
        assert import_jobs.run_job(job_id_of(location), now) is not None
    return client.get(location)


# One list with a row of every kind: good, not an address, already known (other case), suppressed,
# repeated, a name with a line break, no name. The console's and the CLI's import tests read it.
MIXED_ROWS = (
    "Email,Name\n"
    "ada@example.com,Ada Lovelace\n"
    "not-an-address,Nobody\n"
    "KNOWN@example.com,Known\n"
    "gone@example.com,Gone\n"
    "ada@example.com,Ada again\n"
    'bob@example.com,"Bob\nBreak"\n'
    "cy@example.com,\n"
)
