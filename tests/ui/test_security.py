"""Who may use the page and which writes it takes: the token off loopback, the CSRF token on
forms, JSON writes from the page's own origin only, loopback names only without a token."""

from __future__ import annotations

import socket

from fastapi.testclient import TestClient

from mlc_core.jobs.workspace import Workspace
from tests.ui.conftest import client_for, csrf_of, run_mlc

A_TAG_OF_A = {"key": "images/a.jpg", "remove": ["beach"]}


def _tags_of_a(client: TestClient, **headers: str) -> set[str]:
    body = client.get("/api/images/images/a.jpg", headers=headers).json()
    return {t["tag"] for t in body["tags"]}


def test_off_loopback_it_refuses_to_start_without_a_token(tagged_embedded: Workspace) -> None:
    result = run_mlc("ui", "--host", "0.0.0.0", "--port", "1")

    assert result.returncode == 1
    assert "set MLC_UI__TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_sentence(tagged_embedded: Workspace) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_mlc("ui", "--port", str(taken.getsockname()[1]))

    assert result.returncode == 1
    assert "Address already in use; is another mlc ui running there?" in result.stderr


def test_with_a_token_every_request_but_healthz_needs_it(tagged_embedded: Workspace) -> None:
    with client_for(ui={"token": "a-long-secret"}) as client:
        assert client.get("/healthz").status_code == 200
        for path in ("/", "/api/images", "/static/ui.css", "/thumbnails/images/a.jpg"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert "MLC_UI__TOKEN" in refused.text
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        bearer = {"Authorization": "Bearer a-long-secret"}
        assert client.get("/api/images", headers=bearer).status_code == 200
        assert client.post("/api/labels", json=A_TAG_OF_A, headers=bearer).status_code == 200


def test_a_token_in_the_link_moves_into_a_cookie(tagged_embedded: Workspace) -> None:
    with client_for(ui={"token": "a-long-secret"}) as client:
        first = client.get("/runs?token=a-long-secret&limit=5", follow_redirects=False)

        assert first.status_code == 303
        assert first.headers["location"] == "/runs?limit=5"
        assert "httponly" in first.headers["set-cookie"].lower()
        assert client.get("/runs?limit=5").status_code == 200  # the cookie carries it now


def test_a_form_post_without_the_csrf_token_changes_nothing(embedded_client: TestClient) -> None:
    form = {"key": "images/a.jpg", "remove": "beach"}

    refused = embedded_client.post("/labels", data=form)
    stale = embedded_client.post("/labels", data={**form, "csrf": "guessed"})

    assert refused.status_code == stale.status_code == 403
    assert "CSRF" in refused.text
    assert "beach" in _tags_of_a(embedded_client)
    done = embedded_client.post(
        "/labels", data={**form, "csrf": csrf_of(embedded_client)}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == "/images/images/a.jpg"
    assert "beach" not in _tags_of_a(embedded_client)


def test_json_writes_come_only_from_the_pages_own_origin(embedded_client: TestClient) -> None:
    foreign = embedded_client.post(
        "/api/labels", json=A_TAG_OF_A, headers={"Origin": "http://evil.example"}
    )
    cross_site = embedded_client.post(
        "/api/labels", json=A_TAG_OF_A, headers={"Sec-Fetch-Site": "cross-site"}
    )
    as_text = embedded_client.post(
        "/api/labels",
        content=b'{"key": "images/a.jpg", "remove": ["beach"]}',
        headers={"Content-Type": "text/plain"},
    )
    as_form = embedded_client.post(
        "/labels",
        data={"key": "images/a.jpg", "remove": "beach", "csrf": csrf_of(embedded_client)},
        headers={"Origin": "http://evil.example"},
    )

    assert foreign.status_code == cross_site.status_code == as_form.status_code == 403
    assert as_text.status_code == 415
    assert "beach" in _tags_of_a(embedded_client)
    own = embedded_client.post(
        "/api/labels", json=A_TAG_OF_A, headers={"Origin": "http://127.0.0.1:8765"}
    )
    assert own.status_code == 200
    assert "beach" not in _tags_of_a(embedded_client)


def test_without_a_token_it_answers_loopback_names_only(embedded_client: TestClient) -> None:
    rebound = embedded_client.get("/", headers={"Host": "evil.example:8765"})

    assert rebound.status_code == 400
    assert embedded_client.get("/", headers={"Host": "localhost:8765"}).status_code == 200


def test_pages_forbid_framing_and_foreign_scripts(embedded_client: TestClient) -> None:
    headers = embedded_client.get("/").headers

    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
