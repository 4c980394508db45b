import pytest

from config import DEFAULT_SECRET_KEY, database_url
from newsletter import InsecureConfiguration, create_app
from newsletter.infra.smtp import parse_smtp_url


def test_refuses_to_start_with_the_default_secret_outside_debug_and_testing(tmp_path):
    with pytest.raises(InsecureConfiguration, match="SECRET_KEY is not set"):
        create_app({"SECRET_KEY": DEFAULT_SECRET_KEY, "INSTANCE_DIR": tmp_path})
    assert create_app({"SECRET_KEY": DEFAULT_SECRET_KEY, "TESTING": True, "INSTANCE_DIR": tmp_path})
    assert create_app({"SECRET_KEY": "a-real-secret", "INSTANCE_DIR": tmp_path})


def test_embedded_defaults_are_absolute_sqlite_files_under_the_instance_dir(monkeypatch, tmp_path):
    from config import Config

    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INSTANCE_DIR", str(tmp_path))
    config = Config()
    assert config.SQLALCHEMY_DATABASE_URI == f"sqlite:///{tmp_path}/newsletter.sqlite"
    assert config.CELERY_BROKER_URL == f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    assert config.RATELIMIT_STORAGE_URI == "memory://"
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    assert Config().CELERY_BROKER_URL == "redis://127.0.0.1:6379/3"
    assert Config().RATELIMIT_STORAGE_URI == "redis://127.0.0.1:6379/3"


def test_postgres_urls_use_psycopg3():
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_smtp_urls():
    plain = parse_smtp_url("smtp://127.0.0.1:2525")
    assert (plain.host, plain.port, plain.implicit_tls, plain.starttls) == ("127.0.0.1", 2525, False, False)
    tls = parse_smtp_url("smtps://user%40x:p%3Ass@mail.example.org")
    assert (tls.port, tls.implicit_tls, tls.username, tls.password) == (465, True, "user@x", "p:ss")
    starttls = parse_smtp_url("smtp+starttls://mail.example.org")
    assert (starttls.port, starttls.starttls) == (587, True)
    with pytest.raises(ValueError, match="SMTP_URL must start with"):
        parse_smtp_url("http://mail.example.org")
    with pytest.raises(ValueError, match="no host"):
        parse_smtp_url("smtp://")


def test_bad_settings_stop_the_start_with_a_clear_message(tmp_path):
    base = {"TESTING": True, "INSTANCE_DIR": tmp_path}
    with pytest.raises(InsecureConfiguration, match="SMTP_URL must start with"):
        create_app({**base, "SMTP_URL": "mail.example.org:25"})
    with pytest.raises(InsecureConfiguration, match="DIGEST_SCHEDULE: Not a cron expression"):
        create_app({**base, "DIGEST_SCHEDULE": "daily at seven"})
    with pytest.raises(InsecureConfiguration, match="Unknown time zone"):
        create_app({**base, "DIGEST_SCHEDULE": "0 7 * * *", "DIGEST_TIMEZONE": "Paris"})
