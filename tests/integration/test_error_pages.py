"""Error pages: the console's 403 and 404 are console pages that say which role a page needs;
public pages keep their own error page and /api/ its JSON."""

from __future__ import annotations

from html import unescape

import pytest

from tests.support.console import create_operators, logged_in


@pytest.fixture
def signed_in(app, clock):
    def client_for(role: str):
        with app.app_context():
            create_operators(clock, (role,))
        return logged_in(app, role)

    return client_for


def page(response) -> str:
    return unescape(response.get_data(as_text=True))


def test_a_viewer_refused_an_editor_page_is_told_which_role_it_needs(signed_in):
    response = signed_in("viewer").get("/console/digests/new")
    assert response.status_code == 403
    html = page(response)
    assert "This page needs the editor role; you are a viewer." in html
    assert 'class="console"' in html and "viewer@example.org (viewer)" in html  # the console's own frame
    assert "Forbidden" not in html  # not Werkzeug's bare page


def test_an_editor_refused_an_admin_page_is_told_the_same_way(signed_in):
    response = signed_in("editor").get("/console/operators")
    assert response.status_code == 403
    assert "This page needs the admin role; you are an editor." in page(response)


def test_a_missing_console_page_is_a_console_404(signed_in, client):
    response = signed_in("viewer").get("/console/no-such-page")
    assert response.status_code == 404
    html = page(response)
    assert "No console page has this address" in html and 'class="console"' in html
    assert "viewer@example.org (viewer)" in html
    anonymous = client.get("/console/no-such-page")
    assert anonymous.status_code == 404
    assert "No console page has this address" in page(anonymous) and "Log out" not in page(anonymous)


def test_an_item_a_console_view_cannot_find_is_a_console_404(signed_in):
    response = signed_in("editor").get("/console/digests/999")
    assert response.status_code == 404
    assert "No console page has this address, or what it showed no longer exists." in page(response)


def test_public_pages_and_the_api_keep_their_own_errors(client):
    public = client.get("/no-such-page")
    assert public.status_code == 404
    assert "There is no page at this address." in page(public) and 'class="console"' not in page(public)
    assert "Back to the signup form" in page(public)
    api = client.get("/api/v1/no-such-thing")
    assert (api.status_code, api.get_json()) == (404, {"error": "Not found."})
    assert client.get("/consolefoo").status_code == 404
    assert 'class="console"' not in page(client.get("/consolefoo"))
