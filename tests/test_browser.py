"""The page in a real browser: Debian's chromium driven by Playwright, against the real server
(uvicorn in a subprocess, on loopback). Saves docs/img/page.png for the README."""

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


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def test_upload_shows_the_class_without_reload(server: str, browser) -> None:
    page = browser.new_page(viewport={"width": 900, "height": 900})
    page.goto(server + "/?lang=en")
    page.evaluate("window.__marker = 'same page'")  # survives only if there is no reload
    page.set_input_files("#file", str(SAMPLES / "ship.jpg"))  # choosing a file submits it
    page.wait_for_selector("#top-class", timeout=15_000)
    assert page.evaluate("window.__marker") == "same page"
    assert page.locator("#preview").is_visible()
    assert page.locator(".bars li").count() == 5
    if HAS_SHIPPED:
        assert page.inner_text("#top-class") == "ship"
        page.screenshot(path=str(REPO / "docs" / "img" / "page.png"), full_page=True)
    page.close()



@pytest.mark.skipif(not HAS_SHIPPED, reason="needs the trained models in model/")
def test_model_selector_reclassifies_with_each_served_model(server: str, browser) -> None:
    page = browser.new_page()
    page.goto(server + "/?lang=en")
    names = page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
    assert sorted(names) == sorted(p.stem for p in (REPO / "model").glob("*.onnx"))
    default = page.input_value("#model")
    page.set_input_files("#file", str(SAMPLES / "truck.jpg"))
    # Switching the model sends the chosen photo again, to the model picked; the answer names it.
    for name in [n for n in names if n != default] + [default]:
        page.select_option("#model", name)
        page.wait_for_function("n => document.querySelector('.meta')?.textContent.startsWith(n + ' ')", arg=name, timeout=15_000)
        assert page.inner_text("#top-class") == "truck", name
    page.close()


def test_bad_file_shows_an_error_in_the_page(server: str, browser, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not really a png")
    page = browser.new_page()
    page.goto(server + "/?lang=en")
    page.set_input_files("#file", str(bad))
    alert = page.wait_for_selector("[role=alert]", timeout=15_000)
    assert "Could not classify" in alert.inner_text()
    page.set_input_files("#file", str(SAMPLES / "cat.jpg"))  # and it keeps working
    page.wait_for_selector("#top-class", timeout=15_000)
    page.close()


def test_works_without_javascript(server: str, browser) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(server + "/?lang=en")
    page.set_input_files("#file", str(SAMPLES / "horse.jpg"))
    page.click("button[type=submit]")
    page.wait_for_selector("#top-class", timeout=15_000)
    assert page.url.endswith("/classify")
    context.close()


def test_ukrainian_keyboard_and_phone(server: str, browser) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(server + "/?lang=uk")
    assert page.inner_text("h1") == "Класифікатор CIFAR-10"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "no sideways scrolling"
    focused = []
    for _ in range(8):  # the form's controls are reachable with the keyboard alone
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert "file" in focused and "BUTTON" in focused
    page.set_input_files("#file", str(SAMPLES / "frog.jpg"))
    page.wait_for_selector("#top-class", timeout=15_000)
    assert "Схоже, це" in page.inner_text("#result")
    page.close()


def drop_or_paste_script(event: str) -> str:
    """JavaScript that builds a File from the bytes given as its argument and dispatches a drop
    on the drop zone or a paste on the document, as a person's drag or Ctrl+V would."""
    target = "document.getElementById('dropzone')" if event == "drop" else "document"
    make = ("new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})" if event == "drop"
            else "new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true})")
    return f"""bytes => {{
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], 'photo.jpg', {{type: 'image/jpeg'}}));
        {target}.dispatchEvent({make});
    }}"""


@pytest.mark.parametrize("event", ["drop", "paste"])
def test_drag_and_drop_and_paste_classify(server: str, browser, event: str) -> None:
    page = browser.new_page()
    page.goto(server + "/?lang=en")
    page.evaluate(drop_or_paste_script(event), list((SAMPLES / "truck.jpg").read_bytes()))
    page.wait_for_selector("#top-class", timeout=15_000)
    assert page.locator("#preview").is_visible()
    page.close()


@pytest.mark.skipif(not HAS_SHIPPED, reason="needs the trained models in model/")
@pytest.mark.parametrize("lang, unsure_text, where", [("en", "This may not be any of the ten classes", "Where did it look?"),
                                                       ("uk", "Можливо, це жоден із десяти класів", "Куди дивилася модель?")])  # fmt: skip
def test_non_cifar_picture_is_unsure_and_the_heat_map_opens(server: str, browser, tmp_path: Path, lang: str,
                                                            unsure_text: str, where: str) -> None:  # fmt: skip
    from PIL import Image

    flat = tmp_path / "grey.png"  # a flat grey square: none of the ten classes
    Image.new("RGB", (200, 200), (128, 128, 128)).save(flat)
    page = browser.new_page(viewport={"width": 900, "height": 1100})
    page.goto(f"{server}/?lang={lang}")
    page.evaluate("window.__marker = 'same page'")
    page.set_input_files("#file", str(flat))
    note = page.wait_for_selector(".unsure-note", timeout=15_000)
    assert unsure_text in note.inner_text()
    assert page.get_attribute(".prediction", "data-unsure") == "true"
    # The best guess is still shown, greyed.
    assert page.inner_text("#top-class") and page.eval_on_selector(
        "#top-class", "e => getComputedStyle(e).color") != page.eval_on_selector(".languages a", "e => getComputedStyle(e).color")

    # A ship: confident; the toggle is reached by keyboard and swaps the map in without a reload.
    page.set_input_files("#file", str(SAMPLES / "ship.jpg"))
    page.wait_for_selector(".prediction[data-unsure=false]", timeout=15_000)
    summary = page.locator("details.explain summary")
    assert summary.inner_text() == where
    summary.focus()
    page.keyboard.press("Enter")
    image = page.wait_for_selector(".heatmap img", timeout=30_000)
    assert image.get_attribute("alt") and image.evaluate("img => img.complete && img.naturalWidth") == 256
    assert page.evaluate("window.__marker") == "same page"
    if lang == "en":
        page.screenshot(path=str(REPO / "docs" / "img" / "page-explain.png"), full_page=True)
    page.close()
