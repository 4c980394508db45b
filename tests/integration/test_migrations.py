"""The schema only changes through migrations: upgrading from nothing gives exactly the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from newsletter import create_app
from newsletter.extensions import db

from tests.support.database import base_config, drop_pg_database, make_pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.sqlite'}"
        return
    pg_server = request.getfixturevalue("pg_server")
    url = make_pg_database(pg_server)
    yield url
    drop_pg_database(pg_server, url)


def test_upgrade_from_nothing_matches_the_models_and_downgrades_cleanly(tmp_path, empty_database):
    app = create_app(base_config(tmp_path, "smtp://127.0.0.1:1", empty_database))
    with app.app_context():
        upgrade()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, db.metadata) == []
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.engine.dispose()
