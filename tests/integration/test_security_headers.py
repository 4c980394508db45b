"""Security headers on every page: a CSP with no inline script, framing only for the embed."""

import pytest

PAGES = ["/", "/subscribe", "/terms", "/subscribe/check-your-email", "/console/login"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_forbid_inline_script_and_framing(client, path):
    response = client.get(path)
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "<script>" not in response.get_data(as_text=True)


def test_only_the_embed_may_be_framed_and_only_by_allowed_origins(app, client):
    csp = client.get("/embed").headers["Content-Security-Policy"]
    assert "frame-ancestors *" in csp
    assert "X-Frame-Options" not in client.get("/embed").headers
    app.config["EMBED_ALLOWED_ORIGINS"] = "https://news.example.org, https://blog.example.org"
    csp = client.get("/embed").headers["Content-Security-Policy"]
    assert "frame-ancestors https://news.example.org https://blog.example.org" in csp


def test_session_cookie_is_httponly_samesite_and_secure_with_https(app, client):
    client.get("/subscribe")
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.http_only and cookie.secure and cookie.same_site == "Lax"


@pytest.mark.parametrize("path", PAGES + ["/embed", "/api/v1/openapi.json"])
def test_https_sites_ask_browsers_to_use_https_only(client, path):
    assert client.get(path).headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_plain_http_sites_send_no_hsts(app, client):
    app.config["BASE_URL"] = "http://127.0.0.1:5000"
    assert "Strict-Transport-Security" not in client.get("/subscribe").headers
