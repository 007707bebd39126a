"""The JSON API through an in-process client, on SQLite and on PostgreSQL + S3: the same
answers as the commands, corrections that land in the views and the training labels, and
one clear status for what went wrong."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from mlc_core.db.images import ImageRecord, register_images
from mlc_core.db.labels import labels_by_image
from mlc_core.jobs.workspace import Workspace
from tests.ui.conftest import invoke

# (API query, the same question to `mlc tags`)
QUESTIONS = [
    ({}, []),
    ({"all": "dog"}, ["--all", "dog"]),
    ({"all": ["beach", "sky"]}, ["--all", "beach", "--all", "sky"]),
    ({"any": "beach,dog"}, ["--any", "beach", "--any", "dog"]),
    ({"none": "beach"}, ["--none", "beach"]),
    ({"all": "dog", "min_probability": "0.7"}, ["--all", "dog", "--min-prob", "0.7"]),
    ({"all": "sky", "model": "v2"}, ["--all", "sky", "--model", "v2"]),
    ({"prefix": "images/sub/"}, ["--prefix", "images/sub/"]),
    ({"after": "images/b.jpg", "limit": "2"}, ["--after", "images/b.jpg", "--limit", "2"]),
    ({"band": "sky,0.5,0.9"}, ["--band", "sky", "0.5", "0.9"]),
]


def test_images_answer_as_mlc_tags_does(client: TestClient) -> None:
    # One workspace for every question: building one per question would cost more than asking.
    for query, arguments in QUESTIONS:
        response = client.get("/api/images", params=query)
        lines = invoke("tags", *arguments, "--format", "jsonl").splitlines()
        expected = [json.loads(line) for line in lines]

        assert response.status_code == 200, (query, response.text)
        assert response.json()["images"] == expected, query
        assert expected, query


def test_pages_follow_one_another_by_key(client: TestClient) -> None:
    first = client.get("/api/images", params={"limit": 2}).json()
    second = client.get("/api/images", params={"limit": 2, "after": first["next_after"]}).json()

    assert [i["key"] for i in first["images"]] == ["images/a.jpg", "images/b.jpg"]
    assert first["next_after"] == "images/b.jpg"
    assert [i["key"] for i in second["images"]] == ["images/c.jpg", "images/d.jpg"]


def test_source_filter_keeps_images_with_a_persons_tag(client: TestClient) -> None:
    human = client.get("/api/images", params={"source": "human"}).json()["images"]

    assert [i["key"] for i in human] == ["images/c.jpg", "images/d.jpg"]


def test_an_image_shows_every_versions_scores(client: TestClient) -> None:
    body = client.get("/api/images/images/a.jpg").json()

    assert body["key"] == "images/a.jpg"
    assert body["model_version"] == "v1"
    assert [v["version"] for v in body["versions"]] == ["v2", "v1"]
    assert [s["probability"] for s in body["versions"][0]["scores"]] == [0.1, 0.1, 0.9]
    assert {t["tag"] for t in body["tags"]} == {"beach", "dog"}


def test_a_key_that_needs_percent_encoding_is_the_rest_of_the_path(
    tagged_embedded: Workspace, embedded_client: TestClient
) -> None:
    key = "images/a b#1?.jpg"
    with tagged_embedded.transaction() as session:
        uri = tagged_embedded.store.uri(key)
        register_images(session, [ImageRecord(uri, "e1", 12, None)])

    body = embedded_client.get("/api/images/images/a%20b%231%3F.jpg").json()

    assert body["key"] == key and body["uri"] == uri


def test_a_correction_lands_in_current_tags_and_the_training_labels(
    client: TestClient, tagged: Workspace
) -> None:
    response = client.post(
        "/api/labels", json={"key": "images/a.jpg", "add": ["sky"], "remove": ["beach"]}
    )

    assert response.status_code == 200, response.text
    assert response.json()["added"] == ["sky"] and response.json()["removed"] == ["beach"]
    tags = {t["tag"]: t["source"] for t in client.get("/api/images/images/a.jpg").json()["tags"]}
    assert tags == {"dog": "model", "sky": "human"}
    assert "images/a.jpg" not in [
        i["key"] for i in client.get("/api/images", params={"all": "beach"}).json()["images"]
    ]
    with tagged.transaction() as session:
        labels = labels_by_image(session)[tagged.store.uri("images/a.jpg")]
    assert labels == {"sky": True, "beach": False}
    assert "mlc ui by" in invoke("show", "images/a.jpg")


def test_the_review_queue_is_mlc_reviews(client: TestClient) -> None:
    items = client.get("/api/review", params={"n": 3}).json()["items"]

    # b, c and d carry a person's labels; a's dog (0.6) and e's beach (0.95) are nearest 0.5.
    assert [(i["key"], i["tag"]) for i in items] == [
        ("images/a.jpg", "dog"),
        ("images/sub/e.jpg", "beach"),
    ]
    shown = invoke("review", "--n", "3")
    assert shown.index("images/a.jpg") < shown.index("images/sub/e.jpg")


# (request, status, what the answer says)
BAD_REQUESTS = [
    ("/api/images/images/nope.jpg", 404, "images/nope.jpg"),
    ("/api/images?model=v9", 404, "v9"),
    ("/api/images?all=dgo", 400, "close matches: dog"),
    ("/api/images?min_probability=2", 400, "min_probability"),
    ("/api/images?band=sky,high,low", 400, "TAG,LOW,HIGH"),
    ("/api/images?source=robot", 400, "robot"),
    ("/api/images?all=dog&none=dog", 400, "both wanted and excluded"),
    ("/api/images/..%2F..%2Fetc%2Fpasswd", 400, "invalid object key"),
    ("/api/images?after=../x", 400, "invalid object key"),
]


def test_bad_requests_say_what_is_wrong(embedded_client: TestClient) -> None:
    for path, status, says in BAD_REQUESTS:
        response = embedded_client.get(path)

        assert response.status_code == status, (path, response.text)
        assert says in response.json()["error"], path


def test_a_contradictory_correction_changes_nothing(embedded_client: TestClient) -> None:
    response = embedded_client.post(
        "/api/labels", json={"key": "images/a.jpg", "add": ["sky"], "remove": ["sky"]}
    )

    assert response.status_code == 400
    assert "both added and removed" in response.json()["error"]
    tags = embedded_client.get("/api/images/images/a.jpg").json()["tags"]
    assert {t["tag"] for t in tags} == {"beach", "dog"}


def test_health_check_answers(embedded_client: TestClient) -> None:
    assert embedded_client.get("/healthz").json() == {"status": "ok"}
