"""The page without a browser: full-page form posts (no JavaScript) and HTMX fragments."""

from __future__ import annotations

from litestar.testing import TestClient

from tests.images import sample

HX = {"HX-Request": "true"}


def classify(client: TestClient, data: bytes, headers: dict | None = None, **form: str):
    return client.post("/classify", files={"file": ("photo.jpg", data, "image/jpeg")}, data=form, headers=headers or {})


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
    assert page.text.startswith("<!doctype html>") and 'class="prediction"' in page.text
    assert page.text.count("<li>") >= 5  # the top-five bars


def test_htmx_post_answers_only_the_fragment(client: TestClient) -> None:
    fragment = classify(client, sample("ship"), HX)
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and 'class="prediction"' in fragment.text and " ms" in fragment.text


def test_errors_are_shown_in_the_page_not_as_json(client: TestClient) -> None:
    fragment = classify(client, b"plain text", HX)
    assert fragment.status_code == 415
    assert 'role="alert"' in fragment.text and "JPEG, PNG" in fragment.text
    assert not fragment.text.lstrip().startswith("{")
    empty = client.post("/classify", files={"file": ("", b"", "application/octet-stream")}, headers=HX)
    assert empty.status_code == 400 and "Choose an image file first" in empty.text
    too_big = classify(client, b"\xff\xd8\xff" + b"\x00" * (3 * 1024 * 1024))
    assert too_big.status_code == 413 and "<!doctype html>" in too_big.text and "too large" in too_big.text


def test_ukrainian_page_and_class_names(client: TestClient) -> None:
    page = client.get("/?lang=uk")
    assert 'lang="uk"' in page.text and "Оберіть зображення" in page.text
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
