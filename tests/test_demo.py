"""The demo page at /ui of a real `bentoml serve` (packaged tiny model), driven in headless Chromium.

The browser is the system's Chromium (the `browser` fixture of conftest.py). Without a Chromium the
browser tests are skipped. Every request the page makes must go to
the server itself: the page works offline.

OPT_DEMO_SCREENSHOT=docs/demo.png writes the screenshot of the README.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from serving_fixtures import audio_bytes, image_bytes, package_tiny, start_server, stop_server

TIMEOUT_MS = 90_000  # a model call on a loaded 2-core machine


@pytest.fixture(scope="module")
def server(pretrained_synth, tmp_path_factory):
    packaged = package_tiny(pretrained_synth, tmp_path_factory)
    env = {**packaged["env"], "OPT_SERVE_MODEL": packaged["result"]["model"], "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tmp_path_factory.mktemp("demo_log") / "serve.log"
    proc, url = start_server(env, log)
    yield {"url": url, "log": log, "model": packaged["result"]["model"]}
    stop_server(proc)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("demo_files")
    contents = {
        "square.png": image_bytes(),
        "corrupt.png": b"\x89PNG\r\n\x1a\nnot really a png",
        "tone.flac": audio_bytes("FLAC"),
        "big.png": b"\x00" * 400_000,  # over the test model's max_upload_bytes (300 kB)
    }
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in contents}


@pytest.fixture
def page(browser, server):
    """The demo page, loaded (its model card shown); `page.requested` lists every URL it asked for."""
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server['url']}/ui/")
    page.get_by_text("Data version").wait_for()
    yield page
    page.close()


def assert_offline(page, server) -> None:
    foreign = [u for u in page.requested if not u.startswith((server["url"], "data:", "blob:"))]
    assert not foreign, f"the page fetched from elsewhere: {foreign}"


def test_the_page_is_served_beside_the_api(server):
    page = httpx.get(f"{server['url']}/ui/", timeout=60)
    assert page.status_code == 200 and "OPT demo" in page.text
    assert httpx.post(f"{server['url']}/health", timeout=60).json()["status"] == "ok"


def test_the_page_shows_the_model_and_works_offline(page, server):
    card = page.locator("#model-card").inner_text()
    assert server["model"] in card and "manifest-sha256:" in card and "text_to_image/R@1" in card
    assert_offline(page, server)


def test_an_uploaded_image_gets_a_caption_labels_and_an_answer(page, server, files):
    page.locator("#image-file input[type=file]").set_input_files(files["square.png"])
    page.get_by_label("Question (optional)").fill("what colour is the square?")
    page.locator('#image-file a[download="square.png"]').wait_for()  # uploaded
    page.locator("#describe").click()
    page.wait_for_function("() => document.querySelector('#caption textarea').value.trim().length > 0")
    page.get_by_text("Label scores").wait_for()
    answer = page.get_by_label("Answer").input_value()
    assert "(p = " in answer
    if os.environ.get("OPT_DEMO_SCREENSHOT"):
        page.screenshot(path=os.environ["OPT_DEMO_SCREENSHOT"], full_page=True)
    assert_offline(page, server)


def test_a_prompt_gets_a_generated_image(page, server):
    page.get_by_role("tab", name="Generate").click()
    page.locator("#prompt textarea").fill("a small blue square")
    page.locator("#generate").click()
    picture = page.locator("#generated img")
    picture.wait_for()
    page.wait_for_function("() => document.querySelector('#generated img').naturalWidth > 0")
    assert picture.get_attribute("src").startswith(server["url"])
    assert_offline(page, server)


def test_a_corrupt_file_shows_the_apis_reason_and_no_trace(page, server, files):
    page.locator("#image-file input[type=file]").set_input_files(files["corrupt.png"])
    page.locator('#image-file a[download="corrupt.png"]').wait_for()
    page.locator("#describe").click()
    reason = page.get_by_text("bad image:").first
    reason.wait_for()
    shown = page.locator("body").inner_text()
    assert "Traceback" not in shown and "/tmp/" not in shown and "<upload>" not in reason.inner_text()
    api = httpx.post(f"{server['url']}/caption", files={"image": ("c.png", files["corrupt.png"].read_bytes())})
    assert api.status_code == 400 and reason.inner_text().strip() in api.text  # the API's own reason


def test_an_oversized_upload_is_refused_at_the_apis_limit(page, files):
    page.locator("#image-file input[type=file]").set_input_files(files["big.png"])
    page.get_by_text("exceeds max_upload_bytes=300000").first.wait_for()  # the service's 413, before Gradio reads it


def test_a_negative_seed_is_refused_with_the_apis_reason(page):
    page.get_by_role("tab", name="Generate").click()
    page.get_by_label("Seed (optional: the same seed gives the same image)").fill("-3")
    page.locator("#generate").click()
    page.get_by_text("seed: Input should be greater than or equal to 0").first.wait_for()


def test_speech_gets_a_transcript_and_search_shows_thumbnails(page, server, files):
    page.get_by_role("tab", name="Transcribe").click()
    page.locator("#transcribe-audio input[type=file]").set_input_files(files["tone.flac"])
    page.locator("#transcribe-audio audio").first.wait_for(state="attached")  # uploaded: a player shows it
    page.locator("#transcribe").click()
    page.wait_for_function("() => document.querySelector('#transcript textarea').value.length > 0")
    page.get_by_role("tab", name="Search").click()
    page.locator("#search-text textarea").fill("a small blue square")
    page.locator("#search").click()
    page.locator("#results img").nth(5).wait_for()  # 6 results by default
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.naturalWidth > 0)")
    assert page.locator("#results img").count() == 6 and "#1 " in page.locator("#results").inner_text()
    assert_offline(page, server)


def test_the_swagger_page_shows_the_service_and_model(browser, server):
    page = browser.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server['url']}/")
    page.locator("h2.title", has_text="OPT service").wait_for()  # visible
    assert page.title() == "OPT service"
    version = server["model"].split(":")[1]
    page.get_by_text(version).first.wait_for()
    page.get_by_text("/retrieve").first.wait_for()
    shown = page.locator("body").inner_text()
    assert "customize this README" not in shown and "BentoML Team" not in shown
    page.requested = requested
    assert_offline(page, server)
    page.close()
