"""The page without a browser: full-page form posts (no JavaScript) and HTMX fragments."""

from __future__ import annotations

from litestar.testing import TestClient

from tests.images import sample

HX = {"HX-Request": "true"}


def classify(client: TestClient, data: bytes, headers: dict | None = None, **form: str):
    return client.post(
        "/classify", files={"files": ("photo.jpg", data, "image/jpeg")}, data=form, headers=headers or {}
    )


def test_index_has_the_form_and_vendored_htmx(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert 'action="/classify"' in html and 'enctype="multipart/form-data"' in html and 'hx-post="/classify"' in html
    assert '<select id="model" name="model">' in html
    assert client.get("/static/vendor/htmx-2.0.11.min.js").status_code == 200
    assert client.get("/static/app.js").status_code == 200


def test_plain_form_post_answers_a_whole_page_with_the_result(client: TestClient) -> None:
    page = classify(client, sample("ship"))
    assert page.status_code == 200
    assert page.text.startswith("<!doctype html>") and 'class="card prediction' in page.text
    assert page.text.count("<li>") >= 5  # the top-five bars


def test_htmx_post_answers_only_the_fragment(client: TestClient) -> None:
    fragment = classify(client, sample("ship"), HX)
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and 'class="card prediction' in fragment.text and " ms" in fragment.text


def test_errors_are_shown_in_the_page_not_as_json(client: TestClient) -> None:
    fragment = classify(client, b"plain text", HX)
    assert fragment.status_code == 415
    assert 'role="alert"' in fragment.text and "JPEG, PNG" in fragment.text
    assert not fragment.text.lstrip().startswith("{")
    empty = client.post("/classify", files={"files": ("", b"", "application/octet-stream")}, headers=HX)
    assert empty.status_code == 400 and "Choose an image file first" in empty.text
    too_big = classify(client, b"\xff\xd8\xff" + b"\x00" * (3 * 1024 * 1024))
    assert too_big.status_code == 413 and "<!doctype html>" in too_big.text and "too large" in too_big.text


def test_ukrainian_page_and_class_names(client: TestClient) -> None:
    page = client.get("/?lang=uk")
    assert 'lang="uk"' in page.text and "Оберіть фото" in page.text and "Сфотографувати" in page.text
    assert page.cookies.get("lang") == "uk"
    fragment = classify(client, sample("ship"), HX, lang="uk")
    assert "Схоже, це" in fragment.text
    error = classify(client, b"plain text", HX, lang="uk")
    assert "Використайте JPEG" in error.text


def test_language_follows_accept_language(client: TestClient) -> None:
    client.cookies.clear()
    page = client.get("/", headers={"Accept-Language": "uk-UA,uk;q=0.9,en;q=0.8"})
    assert 'lang="uk"' in page.text
    client.cookies.clear()


def test_several_photos_one_request_a_card_each_and_a_bad_one_gets_its_own(client: TestClient) -> None:
    """8 photos, one of them not an image: 7 answers and 1 error card, in the order sent, from one
    request (the form without JavaScript sends them the same way)."""
    labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog"]
    files = [("files", (f"{label}.jpg", sample(label), "image/jpeg")) for label in labels[:3]]
    files += [("files", ("notes.txt", b"not a photo", "text/plain"))]
    files += [("files", (f"{label}.jpg", sample(label), "image/jpeg")) for label in labels[3:]]
    for headers in (HX, {}):
        page = client.post("/classify", files=files, headers=headers)
        assert page.status_code == 200
        html = page.text
        assert html.count('class="card prediction') == 7 and html.count('class="card error"') == 1
        order = [
            html.index(f">{name}<") for name in ["airplane.jpg", "automobile.jpg", "bird.jpg", "notes.txt", "cat.jpg"]
        ]
        assert order == sorted(order), "cards in the order the photos were sent"
        assert 'data-index="3"' in html and 'data-code="unsupported_media_type"' in html
        assert html.count('hx-post="/explain-view"') == 7, "each answer has its own 'Where did it look?'"


def test_explain_view_explains_the_photo_at_its_index(client: TestClient) -> None:
    files = [("files", ("cat.jpg", sample("cat"), "image/jpeg")), ("files", ("ship.jpg", sample("ship"), "image/jpeg"))]
    second = client.post("/explain-view", files=files, data={"index": "1"}, headers=HX)
    assert second.status_code == 200 and "data:image/png;base64," in second.text and "ship" in second.text
    missing = client.post("/explain-view", files=files, data={"index": "5"}, headers=HX)
    assert missing.status_code == 400


def test_the_camera_control_and_labels_are_there_in_both_languages(client: TestClient) -> None:
    for lang, words in (("en", ("Take a photo", "Choose photos")), ("uk", ("Сфотографувати", "Оберіть фото"))):
        html = client.get(f"/?lang={lang}").text
        assert 'capture="environment"' in html and 'accept="image/*"' in html and " multiple " in html
        assert '<label for="camera"' in html and '<label for="file"' in html
        assert all(word in html for word in words)
        assert 'id="preview"' not in html, "no image element before a photo is chosen"


def test_a_plain_form_post_with_the_camera_unused_still_classifies(client: TestClient) -> None:
    """Without JavaScript both file inputs are sent; the unused one is an empty part with no name."""
    empty = ("files", ("", b"", "application/octet-stream"))
    page = client.post("/classify", files=[("files", ("ship.jpg", sample("ship"), "image/jpeg")), empty])
    assert page.status_code == 200 and page.text.count('class="card prediction') == 1
    nothing = client.post("/classify", files=[empty, empty], data={"lang": "en"})
    assert nothing.status_code == 400 and "Choose an image file first" in nothing.text
