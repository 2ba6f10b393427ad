"""The page in a real browser: Debian's chromium driven by Playwright, against the real server
(uvicorn in a subprocess, on loopback).

Every page is checked the same way (`assert_sound`): no visible broken image, no sideways
overflow, no console error. Screenshots go to a temporary folder; to refresh the README's
pictures in docs/img run `SCREENSHOTS_DIR=docs/img python -m pytest tests/test_browser.py`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HAS_SHIPPED, REPO
from tests.images import SAMPLES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the browser test: install Debian's chromium (.ci/run does)")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install .[test]")
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="no chromium")]
# Chromium here must not reach for Google's services: this machine has no network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
WIDTHS = {"phone": (390, 844), "desktop": (1280, 900)}
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: a temporary folder, or SCREENSHOTS_DIR when refreshing the docs."""
    return Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)


def open_page(browser, url: str, size: str = "desktop", **options: object):
    """A page that records console errors and uncaught exceptions in `page.problems`."""
    width, height = WIDTHS[size]
    phone = size == "phone"
    page = browser.new_page(viewport={"width": width, "height": height}, is_mobile=phone, has_touch=phone, **options)
    page.problems = []
    page.on("console", lambda m: page.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    page.goto(url)
    return page


def wait_until_wired(page, selector: str) -> None:
    """Wait until htmx has processed the swapped-in element (bound its triggers): a test acts
    within milliseconds of a swap, which a person never does, and a toggle before that is lost."""
    page.wait_for_function(
        "s => [...document.querySelectorAll(s)].every(e => e['htmx-internal-data'])", arg=selector, timeout=15_000
    )


def assert_sound(page) -> None:
    """No visible image without a picture, nothing wider than the window, no console error."""
    broken = page.evaluate("""() => [...document.images]
        .filter(i => i.getClientRects().length && !(i.complete && i.naturalWidth > 0))
        .map(i => i.alt || i.src)""")
    assert broken == [], f"broken images: {broken}"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "sideways overflow"
    wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(e => e.getClientRects().length && e.getBoundingClientRect().right > window.innerWidth + 1)
        .map(e => e.tagName + (e.id ? '#' + e.id : ''))""")
    assert wide == [], f"cut off at the right edge: {wide}"
    assert page.problems == [], page.problems


@pytest.mark.parametrize("size", sorted(WIDTHS))
@pytest.mark.parametrize("lang", ["en", "uk"])
def test_page_is_sound_before_and_after_an_upload(server: str, browser, shots: Path, lang: str, size: str) -> None:
    page = open_page(browser, f"{server}/?lang={lang}", size)
    assert_sound(page)
    assert page.locator("#camera").get_attribute("capture") == "environment"
    for control in ("#file", "#camera"):  # each picker has a visible label for people and screen readers
        label = page.locator(f"label[for={control[1:]}]")
        assert label.is_visible() and label.inner_text().strip()
    page.evaluate("window.__marker = 'same page'")  # survives only if there is no reload
    page.set_input_files("#file", str(SAMPLES / "ship.jpg"))  # choosing a file submits it
    page.wait_for_selector(".card .thumb img", timeout=15_000)
    assert page.evaluate("window.__marker") == "same page"
    assert page.locator(".bars li").count() == 5
    if HAS_SHIPPED:
        assert page.inner_text(".top-class") == ("ship" if lang == "en" else "корабель")
    assert_sound(page)
    page.screenshot(path=str(shots / f"page-{lang}-{size}.png"), full_page=True)
    if lang == "en" and size == "desktop":
        page.screenshot(path=str(shots / "page.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("size", sorted(WIDTHS))
def test_eight_photos_with_one_bad_file_in_one_request(server: str, browser, shots: Path, tmp_path: Path,
                                                       size: str) -> None:  # fmt: skip
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not really a png")
    photos = [SAMPLES / f"{label}.jpg" for label in LABELS[:7]]
    photos.insert(3, bad)
    page = open_page(browser, f"{server}/?lang=en", size)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.set_input_files("#file", [str(p) for p in photos])
    page.wait_for_function("document.querySelectorAll('#result .card').length == 8", timeout=30_000)
    assert posts == [server + "/classify"], "one request for all eight photos"
    assert page.locator(".card.prediction").count() == 7 and page.locator(".card.error").count() == 1
    assert page.locator(".card").nth(3).get_attribute("data-code") == "unsupported_media_type"
    assert page.locator(".card .thumb img").count() == 7, "each answer shows its own photo"
    assert page.locator(".card details.explain").count() == 7
    assert_sound(page)
    # Each card's toggle explains its own photo.
    wait_until_wired(page, "details.explain")
    page.locator(".card.prediction").nth(4).locator("summary").click()
    image = page.wait_for_selector(".card.prediction >> nth=4 >> .heatmap img", timeout=30_000)
    assert image.evaluate("img => img.complete && img.naturalWidth") == 256
    assert_sound(page)
    page.screenshot(path=str(shots / f"page-several-{size}.png"), full_page=True)
    page.close()


@pytest.mark.skipif(not HAS_SHIPPED, reason="needs the trained models in model/")
def test_model_selector_reclassifies_with_each_served_model(server: str, browser) -> None:
    page = open_page(browser, server + "/?lang=en")
    names = page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
    assert sorted(names) == sorted(p.stem for p in (REPO / "model").glob("*.onnx"))
    default = page.input_value("#model")
    page.set_input_files("#file", str(SAMPLES / "truck.jpg"))
    # Switching the model sends the chosen photo again, to the model picked; the answer names it.
    for name in [n for n in names if n != default] + [default]:
        page.select_option("#model", name)
        page.wait_for_function(
            "n => document.querySelector('.meta')?.textContent.startsWith(n + ' ')", arg=name, timeout=15_000
        )
        assert page.inner_text(".top-class") == "truck", name
    assert_sound(page)
    page.close()


def test_bad_file_shows_an_error_in_the_page(server: str, browser, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not really a png")
    page = open_page(browser, server + "/?lang=en")
    page.set_input_files("#file", str(bad))
    alert = page.wait_for_selector("[role=alert]", timeout=15_000)
    assert "Could not classify" in alert.inner_text()
    page.problems.clear()  # the 415 itself is logged by Chromium as a failed resource load
    page.set_input_files("#file", str(SAMPLES / "cat.jpg"))  # and it keeps working
    page.wait_for_selector(".top-class", timeout=15_000)
    assert_sound(page)
    page.close()


@pytest.mark.parametrize("count", [1, 3])
def test_works_without_javascript(server: str, browser, count: int) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(server + "/?lang=en")
    page.set_input_files("#file", [str(SAMPLES / f"{label}.jpg") for label in LABELS[:count]])
    page.click("button[type=submit]")
    page.wait_for_selector(".top-class", timeout=15_000)
    assert page.url.endswith("/classify")
    assert page.locator(".card.prediction").count() == count
    context.close()


def test_ukrainian_keyboard_and_phone(server: str, browser) -> None:
    page = open_page(browser, server + "/?lang=uk", "phone")
    assert page.inner_text("h1") == "Класифікатор CIFAR-10"
    focused = []
    for _ in range(10):  # the form's controls are reachable with the keyboard alone
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert {"file", "camera", "model"} <= set(focused) and "BUTTON" in focused
    page.set_input_files("#file", str(SAMPLES / "frog.jpg"))
    page.wait_for_selector(".top-class", timeout=15_000)
    assert "Схоже, це" in page.inner_text("#result")
    assert_sound(page)
    page.close()


def drop_or_paste_script(event: str) -> str:
    """JavaScript that builds Files from the byte arrays given as its argument and dispatches a
    drop on the drop zone or a paste on the document, as a person's drag or Ctrl+V would."""
    target = "document.getElementById('dropzone')" if event == "drop" else "document"
    make = (
        "new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})"
        if event == "drop"
        else "new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true})"
    )
    return f"""files => {{
        const dt = new DataTransfer();
        files.forEach((bytes, i) => dt.items.add(new File([new Uint8Array(bytes)], 'photo' + i + '.jpg', {{type: 'image/jpeg'}})));
        {target}.dispatchEvent({make});
    }}"""


@pytest.mark.parametrize("event, count", [("drop", 2), ("paste", 1)])
def test_drag_and_drop_and_paste_classify(server: str, browser, event: str, count: int) -> None:
    page = open_page(browser, server + "/?lang=en")
    page.evaluate(
        drop_or_paste_script(event), [list((SAMPLES / f"{label}.jpg").read_bytes()) for label in LABELS[:count]]
    )
    page.wait_for_function(f"document.querySelectorAll('#result .card .thumb img').length == {count}", timeout=15_000)
    assert_sound(page)
    page.close()


@pytest.mark.skipif(not HAS_SHIPPED, reason="needs the trained models in model/")
@pytest.mark.parametrize("lang, unsure_text, where", [("en", "Unsure: this may show none of the ten classes", "Where did it look?"),
                                                       ("uk", "Непевно: можливо, тут жоден із десяти класів", "Куди дивилася модель?")])  # fmt: skip
def test_non_cifar_picture_is_unsure_and_the_heat_map_opens(server: str, browser, shots: Path, tmp_path: Path,
                                                            lang: str, unsure_text: str, where: str) -> None:  # fmt: skip
    from PIL import Image

    flat = tmp_path / "grey.png"  # a flat grey square: none of the ten classes
    Image.new("RGB", (200, 200), (128, 128, 128)).save(flat)
    page = open_page(browser, f"{server}/?lang={lang}")
    page.evaluate("window.__marker = 'same page'")
    page.set_input_files("#file", str(flat))
    note = page.wait_for_selector(".unsure-note", timeout=15_000)
    assert unsure_text in note.inner_text()
    assert page.get_attribute(".prediction", "data-unsure") == "true"
    # The best guess is still shown, greyed, with its probability: one message, no contradiction.
    assert page.inner_text(".top-class") and page.eval_on_selector(
        ".top-class", "e => getComputedStyle(e).color"
    ) != page.eval_on_selector(".languages a", "e => getComputedStyle(e).color")
    assert "%" in page.inner_text(".verdict")

    # A ship: confident; the toggle is reached by keyboard and swaps the map in without a reload.
    page.set_input_files("#file", str(SAMPLES / "ship.jpg"))
    page.wait_for_selector(".prediction[data-unsure=false]", timeout=15_000)
    summary = page.locator("details.explain summary")
    assert summary.inner_text() == where
    wait_until_wired(page, "details.explain")
    summary.focus()
    page.keyboard.press("Enter")
    image = page.wait_for_selector(".heatmap img", timeout=30_000)
    assert image.get_attribute("alt") and image.evaluate("img => img.complete && img.naturalWidth") == 256
    assert page.evaluate("window.__marker") == "same page"
    assert_sound(page)
    if lang == "en":
        page.screenshot(path=str(shots / "page-explain.png"), full_page=True)
    page.close()
