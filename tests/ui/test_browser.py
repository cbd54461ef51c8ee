"""The web UI in a real headless Chromium (Debian's `chromium` + `chromedriver`, driven by Selenium): what
a user clicks gives what the pipeline makes, pixel for pixel.

One server on the session's tiny trained run and one browser serve every test here (starting them costs
more than the tests). With LATENTDIFF_SCREENSHOTS=1 the screenshots shown in the README are written to
docs/images/; otherwise they go to the test's temporary folder (taken all the same).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from suite_device import TEST_DEVICE

pytest.importorskip("gradio", reason="the web UI needs the `ui` extra: pip install -e '.[ui]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the `test` extra)")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from latentdiff.io.generation_params import read_generation_params  # noqa: E402
from latentdiff.pipeline import LatentDiffusionPipeline  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (installed as root by `make data`: "
    "sudo apt-get install chromium chromium-driver)",
)
REPO = Path(__file__).resolve().parents[2]
WAIT = 120  # seconds any one thing on the page may take on a busy 2-core machine


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def server(tiny_run, guided_run, tmp_path_factory):
    """The page over two runs: the tiny run (shown first) and a copy of it with a guide model."""
    from latentdiff.ui.server import ServeConfig, start_server

    out = tmp_path_factory.mktemp("ui_outputs")
    runs = [tiny_run, guided_run]
    srv = start_server(ServeConfig(runs=runs, out=out, port=_free_port(), device=TEST_DEVICE))
    srv.test_out = out  # where the tests find the files the page saved
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def browser(server):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.get(server.url)
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.ID, "generate"))
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, server):
    """The browser on a freshly loaded page: no test sees another's values or error marks."""
    browser.get(server.url)
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#generate"))
    return browser


@pytest.fixture(scope="module")
def pipe(tiny_run):
    p = LatentDiffusionPipeline.from_pretrained(tiny_run, device=TEST_DEVICE)
    p.progress = False
    return p


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """docs/images/ when LATENTDIFF_SCREENSHOTS=1 (to refresh the README's pictures), else a temp folder."""
    return REPO / "docs" / "images" if os.environ.get("LATENTDIFF_SCREENSHOTS") == "1" else tmp_path


# ------------------------------------------------------------------------------------------ helpers
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in(driver, elem_id: str, css: str):
    return driver.find_element(By.CSS_SELECTOR, f"#{elem_id} {css}")


def set_value(driver, elem_id: str, value) -> None:
    """Type into a number box (or a slider's number box) and leave it, as a user does."""
    box = _in(driver, elem_id, "input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def choose(driver, elem_id: str, option: str) -> None:
    """Pick `option` in a dropdown by typing it and pressing Enter."""
    box = _in(driver, elem_id, "input[role=combobox]")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(option)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, WAIT).until(lambda d: box.get_attribute("value") == option)


def open_tab(driver, name: str) -> None:
    tab = next(t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == name)
    tab.click()


def image_urls(driver, elem_id: str) -> list[str]:
    return [
        img.get_attribute("src")
        for img in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
        if (img.get_attribute("src") or "").startswith("http")
    ]


def wait_for_images(driver, elem_id: str, before: set[str] = frozenset()) -> list[str]:
    def shown(d) -> bool:
        errors = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".toast-body.error")]
        assert not errors, f"the page shows an error: {errors}"
        return bool(set(image_urls(d, elem_id)) - set(before))

    WebDriverWait(driver, WAIT).until(shown)
    return [u for u in image_urls(driver, elem_id) if u not in before]


def download(url: str) -> tuple[np.ndarray, bytes]:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        data = response.read()
    return np.asarray(Image.open(BytesIO(data))), data


def wait_for_text(driver, text: str, timeout: float = WAIT) -> str:
    """The first element's text on the page that contains `text` (toasts, status lines)."""
    xpath = f"//*[contains(text(), {text!r})]"
    WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.XPATH, xpath))
    return driver.find_elements(By.XPATH, xpath)[0].text


def close_toasts(driver) -> None:
    for button in driver.find_elements(By.CSS_SELECTOR, ".toast-close"):
        with contextlib.suppress(Exception):  # a toast closing by itself meanwhile is fine
            button.click()


# ------------------------------------------------------------------------------------------ tests
def test_generate_shows_the_pipelines_image_and_its_png_restores_the_settings(
    page, pipe, tmp_path, screenshots
):
    open_tab(page, "Generate")
    choose(page, "class", "3")
    set_value(page, "seed", 1234)
    set_value(page, "steps", 6)
    set_value(page, "guidance", 2)
    page.find_element(By.ID, "generate").click()
    (url,) = wait_for_images(page, "gallery")
    shown, data = download(url)
    expected = pipe(
        num_images=1,
        steps=6,
        sampler="dpmpp_2m",
        guidance_scale=2.0,
        class_labels=3,
        seed=1234,
        output_type="np",
    )[0, ..., 0]
    assert shown.dtype == np.uint8 and np.array_equal(shown, expected), "the page shows pipe(...)'s image"
    wait_for_text(page, "seed 1234, 6 steps")
    page.save_screenshot(str(screenshots / "ui_generate.png"))

    # the PNG carries its settings; dropped on the page, they come back
    saved = tmp_path / "from_the_page.png"
    saved.write_bytes(data)
    params = read_generation_params(saved)
    assert (params.class_label, params.seed, params.steps, params.guidance) == ("3", 1234, 6, 2.0)
    choose(page, "class", "7")
    set_value(page, "seed", 5)
    set_value(page, "steps", 20)
    _in(page, "load-png", "input[type=file]").send_keys(str(saved))
    wait_for_text(page, "settings of from_the_page.png restored")
    assert _in(page, "seed", "input[type=number]").get_attribute("value") == "1234"
    assert _in(page, "steps", "input[type=number]").get_attribute("value") == "6"
    assert _in(page, "class", "input[role=combobox]").get_attribute("value") == "3"


def test_a_broken_upload_gives_a_message_and_the_server_keeps_serving(page, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing an image decoder wants")
    _in(page, "load-png", "input[type=file]").send_keys(str(broken))
    message = wait_for_text(page, "cannot read broken.png")
    assert "not a readable image" in message and "Traceback" not in page.page_source
    close_toasts(page)


def test_inpainting_regenerates_the_painted_region_and_keeps_the_rest(
    page, pipe, server, tmp_path, screenshots
):
    from latentdiff.data.image_folder import load_image_file

    digit = (np.add.outer(np.arange(8), np.arange(8)) * 4).astype(np.uint8)  # dark: `image_box` finds it
    Image.fromarray(digit, mode="L").convert("RGB").save(tmp_path / "input.png")
    open_tab(page, "Inpaint")
    set_value(page, "seed", 77)
    set_value(page, "steps", 5)
    editor = page.find_element(By.ID, "inpaint-editor")
    upload = page.find_element(By.ID, "inpaint-input")
    upload.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(tmp_path / "input.png"))
    canvas = WebDriverWait(page, WAIT).until(lambda d: editor.find_elements(By.CSS_SELECTOR, "canvas"))[0]
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    box = WebDriverWait(page, WAIT).until(lambda d: image_box(d, canvas))  # the upload is drawn
    paint_left_half(page, box)
    WebDriverWait(page, WAIT).until(lambda d: image_box(d, canvas) != box)  # the strokes are being drawn
    drawn: list = []  # ... and all of them: the same picture twice in a row (a loaded machine draws late)
    WebDriverWait(page, WAIT).until(
        lambda d: drawn.append(image_box(d, canvas)) or drawn[-2:-1] == drawn[-1:]
    )
    page.find_element(By.ID, "inpaint-run").click()
    (result_url,) = wait_for_images(page, "inpaint-result")
    (mask_url,) = wait_for_images(page, "inpaint-mask")
    result, _ = download(result_url)
    mask = download(mask_url)[0] > 127
    assert mask[:, :2].all() and not mask[:, 6:].any(), (
        f"the painted left part is the mask:\n{mask.astype(int)}"
    )
    page.execute_script("arguments[0].scrollIntoView({block: 'start'})", editor)
    page.save_screenshot(str(screenshots / "ui_inpaint.png"))  # painted mask, result and mask used

    # the model was given the uploaded pixels exactly (not the editor canvas's copy: Gradio 6.31 hands
    # that back ~0.8x darker), saved beside the result
    (used,) = server.test_out.glob("*/*-inpaint-seed77-input.png")
    page_input = np.asarray(Image.open(used))
    assert np.array_equal(page_input, digit), f"the model was given the upload:\n{page_input}"
    x = load_image_file(used, 1, 8)[None]
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    out = pipe.inpaint(x, m, steps=5, sampler="dpmpp_2m", seed=77)
    expected = ((m * out + (1 - m) * x)[0, 0] + 1) * 127.5
    assert np.array_equal(result[~mask], page_input[~mask]), "the unpainted pixels are the input's"
    assert np.array_equal(result, expected.round().numpy().astype(np.uint8)), "painted ones: pipe.inpaint"
    assert not np.array_equal(result[mask], page_input[mask]), "the painted region was regenerated"


def client_rect(driver, element) -> dict[str, float]:
    """The element's box in CSS pixels from the viewport's top left (what screenshots and CDP input use;
    Selenium's `rect` counts from the document's)."""
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}",
        element,
    )


def image_box(driver, canvas) -> tuple[float, float, float, float] | None:
    """Where the editor draws the uploaded image: (left, top, width, height) in CSS pixels of the viewport,
    found in a screenshot of the page (the test image is dark, the canvas white; a screenshot of the WebGL
    canvas element alone comes back blank)."""
    page = np.asarray(Image.open(BytesIO(driver.get_screenshot_as_png())).convert("L"))
    scale = page.shape[1] / driver.execute_script("return window.innerWidth")  # device px per CSS px
    r = client_rect(driver, canvas)
    shot = page[round(r["y"] * scale) : round((r["y"] + r["h"]) * scale)]
    shot = shot[:, round(r["x"] * scale) : round((r["x"] + r["w"]) * scale)]
    dark = shot < 64  # the image is dark and large; the toolbars' icons are lighter and small
    (rows,), (cols,) = np.nonzero(dark.sum(1) > 24), np.nonzero(dark.sum(0) > 24)
    if len(rows) < 8 or len(cols) < 8 or np.ptp(cols) > 0.8 * shot.shape[1]:  # nothing drawn yet
        return None
    left, top = r["x"] + cols.min() / scale, r["y"] + rows.min() / scale
    return left, top, (np.ptp(cols) + 1) / scale, (np.ptp(rows) + 1) / scale


def paint_left_half(driver, box) -> None:
    """Vertical brush strokes down the left half of the 8×8 image, as a mouse makes them: Chrome's own
    input events through the DevTools protocol (pointerdown, moves with the button held, pointerup), each
    stroke starting inside the image, where the editor's brush only begins one. Selenium's ActionChains
    strokes painted nothing on the editor's WebGL canvas."""
    left, top, width, height = box

    def mouse(kind: str, x: float, y: float, buttons: int) -> None:
        event = {"type": kind, "x": x, "y": y, "button": "left" if kind != "mouseMoved" else "none"}
        event.update(buttons=buttons, clickCount=1 if kind != "mouseMoved" else 0, pointerType="mouse")
        if kind == "mouseMoved" and buttons:
            event["button"] = "left"
        driver.execute_cdp_cmd("Input.dispatchMouseEvent", event)

    for column in (0.5, 1.5, 2.5, 3.2):
        x = left + column * width / 8
        ys = [top + row * height / 8 for row in np.linspace(0.3, 7.9, 12)]  # the last row fully, too
        mouse("mouseMoved", x, ys[0], 0)  # the editor marks the cursor over the image on a move
        mouse("mousePressed", x, ys[0], 1)
        for y in ys[1:]:
            mouse("mouseMoved", x, y, 1)
        mouse("mouseReleased", x, ys[-1], 0)


def test_cancel_stops_a_long_sampling_and_the_next_request_is_served(page, server):
    open_tab(page, "Generate")
    choose(page, "class", "(none)")
    set_value(page, "guidance", 1)
    set_value(page, "seed", 3)
    set_value(page, "steps", 500)
    before = set(image_urls(page, "gallery"))
    page.find_element(By.ID, "generate").click()
    WebDriverWait(page, WAIT).until(lambda d: image_urls(d, "preview"))  # sampling is under way
    started = time.monotonic()
    page.find_element(By.ID, "cancel").click()
    status = wait_for_text(page, "cancelled after step", timeout=60)
    stopped_after = time.monotonic() - started
    step = int(status.split("cancelled after step ")[1].split()[0])
    assert 0 < step < 500 and stopped_after < 60, (status, stopped_after)
    close_toasts(page)

    set_value(page, "steps", 2)
    page.find_element(By.ID, "generate").click()
    assert wait_for_images(page, "gallery", before), "the next request is served"


def test_a_run_with_a_guide_offers_autoguidance_and_shows_the_pipelines_image(page, guided_run):
    open_tab(page, "Generate")

    def kind_shown(d) -> bool:  # Gradio leaves a hidden control out of the page, or hides it
        return any(e.is_displayed() for e in d.find_elements(By.ID, "guidance-kind"))

    assert not kind_shown(page), "the first run has no guide"
    choose(page, "run", guided_run.name)
    WebDriverWait(page, WAIT).until(kind_shown)
    chosen = _in(page, "guidance-kind", "input:checked").get_attribute("value")
    assert chosen == "auto", "a run with a guide starts on autoguidance"
    set_value(page, "seed", 6)
    set_value(page, "steps", 3)
    set_value(page, "guidance", 2)
    page.find_element(By.ID, "generate").click()
    (url,) = wait_for_images(page, "gallery")
    shown, _ = download(url)
    guided = LatentDiffusionPipeline.from_pretrained(guided_run, device=TEST_DEVICE)
    expected = guided(num_images=1, steps=3, guidance_scale=2.0, guidance="auto", seed=6, output_type="np")[
        0, ..., 0
    ]  # unconditional: only autoguidance can guide it
    assert np.array_equal(shown, expected), "the page shows pipe(..., guidance='auto')'s image"


def test_the_server_serves_no_file_outside_its_output_folder(server, tiny_run):
    import urllib.error

    for path in (tiny_run / "unet" / "config.json", Path("/etc/passwd")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}gradio_api/file={path}", timeout=WAIT)
        assert refused.value.code == 403, path
