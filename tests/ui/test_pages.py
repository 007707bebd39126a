"""The HTML pages through an in-process client: what each shows, escaping, and the 404 / 400
/ 503 pages (the server serving again once the database or the store is back)."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlc_core.db.images import ImageRecord, record_failures, register_images
from mlc_core.db.labels import LabelRecord, upsert_labels
from mlc_core.db.runs import finish_run, start_run
from mlc_core.jobs.workspace import Workspace
from mlc_core.settings import load_settings
from tests.tagged import _tagged
from tests.ui.conftest import client_for, csrf_of, give_metrics
from tests.ui.tcp_proxy import TcpProxy

SCRIPT_KEY = "images/<script>alert(1)</script>.jpg"


def _keys_shown(page: str) -> list[str]:
    return [html.unescape(k) for k in re.findall(r'<figure class="card" data-key="([^"]*)"', page)]


def test_the_gallery_shows_thumbnails_tags_and_counts(client: TestClient) -> None:
    page = client.get("/").text

    assert _keys_shown(page) == [
        "images/a.jpg",
        "images/b.jpg",
        "images/c.jpg",
        "images/d.jpg",
        "images/sub/e.jpg",
    ]
    assert '<img loading="lazy" src="/thumbnails/images/a.jpg"' in page
    assert re.search(r">dog</a> <span>4</span>", page)  # a, c, d (a person's), e


def test_the_gallery_filters_and_pages_as_the_api_does(client: TestClient) -> None:
    narrowed = client.get("/", params={"all": "beach", "none": "sky"}).text
    first = client.get("/", params={"limit": 2}).text
    link = html.unescape(re.findall(r'href="([^"]*)" id="next-page"', first)[0])

    assert _keys_shown(narrowed) == ["images/a.jpg"]
    assert _keys_shown(client.get("/", params={"all": "sky", "source": "human"}).text) == [
        "images/c.jpg"
    ]
    assert _keys_shown(client.get(link).text) == ["images/c.jpg", "images/d.jpg"]


def test_an_image_page_shows_bars_tags_versions_and_buttons(client: TestClient) -> None:
    page = client.get("/images/images/c.jpg").text

    assert "probabilities under v1" in page
    assert page.count('<svg class="bar"') == 3
    assert 'class="tag human" data-tag="sky"' in page
    assert 'class="tag model" data-tag="dog"' in page
    assert page.count('data-action="remove"') == 2 and page.count('data-action="confirm"') == 2
    assert f'name="csrf" value="{csrf_of(client)}"' in page


def test_a_button_records_the_correction_and_the_page_shows_it(client: TestClient) -> None:
    form = {"csrf": csrf_of(client), "key": "images/c.jpg", "remove": "dog"}
    page = client.post("/labels", data=form).text  # the redirect is followed

    assert 'data-tag="dog"' not in page.split('id="current-tags"')[1].split("</ul>")[0]
    assert "-dog" in page  # the label, with its source
    assert "mlc ui by" in page


def test_a_key_that_looks_like_markup_shows_as_text(tagged_embedded: Workspace) -> None:
    tagged_embedded.store.put(SCRIPT_KEY, b"not an image")
    with tagged_embedded.transaction() as session:
        uri = tagged_embedded.store.uri(SCRIPT_KEY)
        register_images(session, [ImageRecord(uri, "e1", 12, None)])
        upsert_labels(session, [LabelRecord(uri, "dog", True, "test", complete=False)])
    with client_for() as client:
        gallery = client.get("/").text
        page = client.get("/images/images/%3Cscript%3Ealert(1)%3C/script%3E.jpg").text
        missing = client.get("/images/images/%3Cscript%3Ealert(2)%3C/script%3E.jpg").text

    for shown in (gallery, page, missing):
        assert "<script>alert" not in shown
        assert "&lt;script&gt;alert" in shown
    assert SCRIPT_KEY in _keys_shown(gallery)


# (request, status, what the answer says)
UNSHOWABLE = [
    ("/images/images/nope.jpg", 404, "no image with the key &#39;images/nope.jpg&#39;"),
    ("/images/images/a.jgp", 404, "did you mean images/a.jpg"),
    ("/models/v9", 404, "there is no model version &#39;v9&#39;"),
    ("/?model=v9", 404, "v9"),
    ("/?all=dgo", 400, "close matches: dog"),
    ("/?min_probability=high", 400, "is not a number"),
    ("/?min_probability=0.5", 400, "applies to the all tags"),
    ("/images/..%2F..%2Fetc%2Fpasswd", 400, "invalid object key"),
    ("/thumbnails/..%2F..%2Fetc%2Fpasswd", 400, "invalid object key"),
    ("/thumbnails//etc/passwd", 400, "invalid object key"),
    ("/thumbnails/images/a.jpg?size=huge", 400, "expected one of small, large"),
    ("/review?tag=dgo", 400, "close matches: dog"),
]


def test_what_cannot_be_shown_gets_a_page_that_says_why(embedded_client: TestClient) -> None:
    for path, status, says in UNSHOWABLE:
        response = embedded_client.get(path)

        assert response.status_code == status, path
        assert says in response.text, path
        assert response.headers["content-type"].startswith("text/html"), path


def test_a_failed_image_shows_a_placeholder_with_its_reason(tagged_embedded: Workspace) -> None:
    with tagged_embedded.transaction() as session:
        ids = register_images(
            session, [ImageRecord(tagged_embedded.store.uri("images/a.jpg"), "e1", 100, None)]
        )
        record_failures(session, [(next(iter(ids.values())), "empty file: 0 bytes")])
    with client_for() as client:
        placeholder = client.get("/thumbnails/images/a.jpg")
        thumbnail = client.get("/thumbnails/images/b.jpg")
        page = client.get("/images/images/a.jpg").text

    assert placeholder.headers["content-type"].startswith("image/svg+xml")
    assert b"empty file: 0 bytes" in placeholder.content
    assert thumbnail.headers["content-type"] == "image/jpeg"
    assert 'id="failure">scoring failed' in page and "empty file: 0 bytes" in page


def test_the_models_page_compares_each_class_with_the_champion(
    tagged_embedded: Workspace,
) -> None:
    give_metrics(tagged_embedded)
    with client_for() as client:
        page = client.get("/models").text
        one = client.get("/models/v2").text

    assert 'id="model-v1"' in page and 'id="model-v2"' in page
    assert '<span class="status champion">champion</span>' in page
    assert "promotion decision:</strong> kept v1: dog&#39;s AP fell 0.22" in one
    # v2's dog beside the champion's, on the champion's test images (from v2's card).
    assert "<td>dog</td>" in one and "<td>0.400</td>" in one and "<td>0.620</td>" in one
    assert "the champion&#39;s test images" in one
    assert 'id="model-v1"' not in one and one.count('<svg class="chart"') == 3
    assert 'class="mine" x="0" y="0" width="40.0"' in one
    assert 'class="theirs" x="0" y="6" width="62.0"' in one


def test_the_runs_page_shows_counts_drift_failures_and_prefect_links(
    tagged_embedded: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tagged_embedded.transaction() as session:
        run = start_run(session, "score", {"prefect_flow_run_id": "1234-abcd"})
        counts = {
            "scored": 120,
            "failed": 3,
            "images_per_second": 41.5,
            "drift": [{"tag": "sky", "run_rate": 0.9, "reference_rate": 0.2, "psi": 1.3}],
        }
        finish_run(session, run, status="succeeded", counts=counts)
        ids = register_images(
            session, [ImageRecord(tagged_embedded.store.uri("images/x.jpg"), "e", 1, None)]
        )
        record_failures(session, [(next(iter(ids.values())), "empty file: 0 bytes")])
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    with client_for() as client:
        page = client.get("/runs").text

    assert "scored 120, failed 3" in page and "41.5" in page
    assert 'class="drift">sky (PSI 1.30)' in page
    assert "<td>empty file</td><td>1</td>" in page
    assert 'href="http://127.0.0.1:4200/runs/flow-run/1234-abcd"' in page


def test_the_review_page_shows_the_item_at_its_position(embedded_client: TestClient) -> None:
    first = embedded_client.get("/review").text
    second = embedded_client.get("/review?position=1").text
    past = embedded_client.get("/review?position=2").text

    assert 'id="review-key">images/a.jpg' in first and 'id="review-tag">dog' in first
    assert 'id="review-key">images/sub/e.jpg' in second
    assert 'id="review-done"' in past


@pytest.fixture
def proxied_database(
    request: pytest.FixtureRequest,
    isolated_mlc_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> TcpProxy:
    """The tagged workspace on PostgreSQL, reached through a proxy a test can cut."""
    with _tagged(request, isolated_mlc_environment, "servers", monkeypatch) as workspace:
        url = workspace.engine.url
        with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            proxied = url.set(host="127.0.0.1", port=proxy.port)
            monkeypatch.setenv("MLC_DATABASE_URL", proxied.render_as_string(hide_password=False))
            yield proxy


def test_a_database_that_goes_away_is_a_503_until_it_is_back(proxied_database: TcpProxy) -> None:
    with client_for() as client:
        assert client.get("/api/images").status_code == 200
        proxied_database.stop()
        down_api = client.get("/api/images")
        down_page = client.get("/")
        down_health = client.get("/healthz")
        proxied_database.start()
        back = client.get("/api/images")

    assert down_api.status_code == down_page.status_code == down_health.status_code == 503
    assert "database" in down_api.json()["error"]
    assert "database unavailable" in down_page.text
    assert down_health.json()["unavailable"] == "database"
    assert back.status_code == 200 and len(back.json()["images"]) == 5


def test_a_database_down_at_start_is_a_503_until_it_is_up(tagged_embedded: Workspace) -> None:
    with TcpProxy("127.0.0.1", 9) as proxy:  # nothing answers: the database is down
        proxy.stop()
        settings = load_settings(database_url=f"postgresql+psycopg://u@127.0.0.1:{proxy.port}/x")
        from flows.ui import create_app

        with TestClient(create_app(settings), base_url="http://127.0.0.1:8765") as client:
            response = client.get("/")

    assert response.status_code == 503
    assert "database" in response.text


def test_a_store_that_goes_away_is_a_503_until_it_is_back(tagged_embedded: Workspace) -> None:
    root = Path(tagged_embedded.store.url)
    with client_for() as client:
        assert client.get("/thumbnails/images/a.jpg").status_code == 200
        shutil.move(root, root.with_name("moved"))
        root.write_bytes(b"")  # where the store was, a file: the store cannot be used
        down = client.get("/thumbnails/images/b.jpg")
        root.unlink()
        shutil.move(root.with_name("moved"), root)
        back = client.get("/thumbnails/images/b.jpg")

    assert down.status_code == 503
    assert "store unavailable" in down.text
    assert back.status_code == 200 and back.headers["content-type"] == "image/jpeg"
