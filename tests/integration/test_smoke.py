def test_form_serves(client):
    assert client.get("/subscribe").status_code == 200
