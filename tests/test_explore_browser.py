"""``minicnn explore``'s page in a real headless Chromium: draw a digit with mouse events, wait
for the prediction, check the class against ``minicnn predict`` on the very pixels drawn (and,
with real MNIST, that a drawn "1" is read as 1), that feature maps and saliency are not blank,
and that the convolution inspector and the class choice answer.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and Selenium
(the ``test`` extra); skipped with the reason when they are absent. The browser is driven by
the same code as the README's screenshot (``docs/explore_screenshot.py``)."""

import base64
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing), reason=f"headless browser test needs Debian's chromium and "
                       f"chromium-driver ({', '.join(missing)} missing; `apt-get install -y "
                       "chromium chromium-driver`, as .ci/run does)"),
]
selenium = pytest.importorskip("selenium", reason="the browser test needs Selenium: "
                                                  "pip install -e '.[test]'")

DATA_DIR = os.environ.get("MINICNN_DATA_DIR")
HAVE_MNIST = bool(DATA_DIR) and (Path(DATA_DIR) / "mnist").is_dir()


def load_screenshot_script():
    path = Path(__file__).parents[1] / "docs" / "explore_screenshot.py"
    spec = importlib.util.spec_from_file_location("explore_screenshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """LeNet-5 for one short epoch: on real MNIST when it is here, else on synthetic shapes."""
    from minicnn.train import TrainConfig, fit

    out = tmp_path_factory.mktemp("explore-browser") / "run"
    if HAVE_MNIST:
        config = TrainConfig(dataset="mnist", data_dir=DATA_DIR, model="lenet5", epochs=1,
                             limit=6000, test_limit=200, val_size=0, batch_size=32, lr=0.05,
                             seed=0, backend="im2col")
    else:
        config = TrainConfig(dataset="synthetic", model="lenet5", epochs=1, limit=600,
                             test_limit=100, val_size=0, batch_size=32, lr=0.05, seed=0,
                             backend="im2col")
    fit(config, out, progress=False, log=None)
    return out


@pytest.fixture(scope="module")
def page(run_folder):
    from minicnn.explore import open_run, start_in_thread

    script = load_screenshot_script()
    server, _ = start_in_thread(open_run(run_folder))
    profile = tempfile.mkdtemp(prefix="minicnn-chromium-")
    driver = script.chromium(1366, 768, profile)
    try:
        driver.get(server.url)
        script.wait_for(driver, "document.getElementById('status').dataset.state === 'ready'")
        yield driver, script, server
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)


def canvas_spread(driver, selector: str) -> list[float]:
    """The standard deviation of the pixel values of every canvas matching ``selector``."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll(arguments[0])).map((c) => {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let s = 0, s2 = 0, n = 0;
          for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i+1] + d[i+2]) / 3; s += v; s2 += v * v; n++; }
          const m = s / n; return Math.sqrt(Math.max(0, s2 / n - m * m));
        });""", selector)


def pad_png(driver) -> bytes:
    url = driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def draw_and_read(driver, script, digit: str) -> str:
    driver.find_element("id", "clear").click()
    script.draw(driver, script.DIGITS[digit])
    script.settled(driver)
    return driver.find_element("id", "predicted-label").text


def test_drawing_a_digit_shows_the_prediction_and_every_layer(page, run_folder, tmp_path,
                                                              capsys):
    from minicnn.cli import main

    driver, script, server = page
    label = draw_and_read(driver, script, "1")
    # The class shown is what `minicnn predict` says for the very pixels on the pad.
    drawn = tmp_path / "drawn.png"
    drawn.write_bytes(pad_png(driver))
    assert main(["predict", str(run_folder), str(drawn), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)[0]["top"][0]
    assert label == predicted["label"]
    shown = driver.find_element("id", "predicted-prob").text
    assert shown == f"{100 * predicted['probability']:.1f} % sure"
    if HAVE_MNIST:          # measured, seeds 0, 2, 3, 4: read as 1 with >= 99.7 %
        assert label == "1"

    # Feature maps are painted, not blank (a blank canvas has spread 0): every map of each
    # convolution varies, and each layer with maps has some that do (a ReLU or pool map may be
    # all zero). Measured (MNIST, "1" and "7"): conv maps >= 2.2, the best map of every other
    # layer >= 19.8, saliency ~31.
    layers = server.info["layers"]
    for index, layer in enumerate(layers):
        if len(layer["shape"]) != 3:
            continue
        spreads = canvas_spread(driver, f"canvas.fmap[data-layer='{index}']")
        assert len(spreads) == layer["shape"][0]
        if layer["conv"]:
            assert min(spreads) > 1.0, (index, spreads)
        else:
            assert max(spreads) > 5.0, (index, spreads)
    assert canvas_spread(driver, "#why-saliency")[0] > 5.0
    assert canvas_spread(driver, "#steps canvas")[0] > 5.0


def test_the_inspector_shows_how_a_convolution_output_is_made(page):
    driver, script, server = page
    from selenium.webdriver.common.action_chains import ActionChains

    if driver.find_element("id", "predicted-label").text == "?":
        draw_and_read(driver, script, "7")
    convs = [i for i, layer in enumerate(server.info["layers"]) if layer["conv"]]
    driver.execute_script(f"document.querySelector(\"canvas.fmap[data-layer='{convs[1]}']"
                          f"[data-channel='2']\").click()")
    script.wait_for(driver, "!document.getElementById('inspector').hidden")
    big = driver.find_element("id", "insp-map")
    ActionChains(driver).move_to_element_with_offset(big, 5, 5).perform()
    script.wait_for(driver, "document.querySelectorAll('#insp-math .grid').length >= 3")
    text = driver.find_element("id", "insp-math").text
    assert "Σ of all 150 products" in text and "the layer's output here" in text
    assert canvas_spread(driver, "#insp-input")[0] > 5.0
    driver.find_element("id", "insp-close").click()
    script.wait_for(driver, "document.getElementById('inspector').hidden")


def test_choosing_a_class_shows_its_saliency(page):
    driver, script, server = page
    if driver.find_element("id", "predicted-label").text == "?":
        draw_and_read(driver, script, "7")
    driver.find_element("css selector", ".bar[data-class='4']").click()
    name = server.info["classes"][4]
    script.wait_for(driver, f"document.getElementById('why-caption').textContent.includes("
                            f"{json.dumps(name)})")
    assert "chosen" in driver.find_element("css selector", ".bar[data-class='4']")\
        .get_attribute("class")


@pytest.mark.skipif(not HAVE_MNIST, reason="real MNIST not found in $MINICNN_DATA_DIR")
def test_a_drawn_seven_is_read_as_seven(page):     # measured: >= 99.9 % for seeds 0, 2-4
    driver, script, _ = page
    assert draw_and_read(driver, script, "7") == "7"


def test_an_uploaded_image_is_classified_as_predict_classifies_the_file(page, run_folder,
                                                                       tmp_path, capsys):
    from PIL import Image, ImageDraw

    from minicnn.cli import main

    driver, script, _ = page
    # Dark ink on white, off centre, not square: the page must say it inverted it.
    image = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(image).line([(180, 40), (240, 40), (205, 170)], fill="black", width=14)
    path = tmp_path / "upload.png"
    image.save(path)
    before = driver.execute_script("return state.result && state.result.id")
    upload = driver.find_element("id", "upload")
    driver.execute_script("arguments[0].style.display = 'block'", upload)
    upload.send_keys(str(path))
    script.wait_for(driver, f"state.result && state.result.id !== {json.dumps(before)} && "
                            "document.getElementById('status').dataset.state === 'ready'")
    assert main(["predict", str(run_folder), str(path), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)[0]
    assert driver.find_element("id", "predicted-label").text == expected["top"][0]["label"]
    assert expected["inverted"] and "inverted" in driver.find_element("id", "draw-note").text


# ---------------------------------------------------------------------------------------------
# A detection run: the page shows the boxes `minicnn detect` finds
# ---------------------------------------------------------------------------------------------
LOW = 0.02      # a detector trained for two steps scores everything low (about 0.05)


@pytest.fixture(scope="module")
def detection_page(tmp_path_factory):
    """A tiny detector trained for two steps on real MNIST scenes, served with boxes shown
    down to a low score so that a barely trained network still shows some."""
    if not HAVE_MNIST:
        pytest.skip("real MNIST not found in $MINICNN_DATA_DIR (detection scenes are made "
                    "from it)")
    from minicnn.explore import start_in_thread
    from minicnn.explore.detection import DetectionExplorer
    from minicnn.train import TrainConfig, fit, load_run

    out = tmp_path_factory.mktemp("explore-browser-detect") / "run"
    fit(TrainConfig(dataset="mnist-scenes", data_dir=DATA_DIR, model="tiny-detector",
                    epochs=1, batch_size=32, lr=2e-3, optimizer="adam", weight_decay=0.0,
                    augment=False, limit=64, test_limit=8, val_size=0, seed=3),
        out, progress=False, log=None)
    _, model, meta = load_run(out)
    script = load_screenshot_script()
    server, _ = start_in_thread(DetectionExplorer(model, meta, threshold=LOW))
    profile = tempfile.mkdtemp(prefix="minicnn-chromium-")
    driver = script.chromium(1366, 768, profile)
    try:
        driver.get(server.url)
        script.wait_for(driver, "document.getElementById('status').dataset.state === 'ready'")
        yield driver, script, server, out
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)


def shown_boxes(driver) -> list[tuple[str, float]]:
    """(label, score) of each box listed on the page; the score as the row's data says it."""
    rows = driver.execute_script("""return Array.from(document.querySelectorAll('.det-box'))
        .map((row) => [row.querySelector('b').textContent,
                       state.result.boxes[Number(row.dataset.box)].score]);""")
    return [(label, score) for label, score in rows]


def test_an_uploaded_scene_shows_the_boxes_detect_finds(detection_page, tmp_path, capsys):
    from PIL import Image

    from minicnn.cli import main
    from minicnn.data import load_dataset

    driver, script, server, run = detection_page
    assert driver.find_element("id", "predict-title").text == "Detections"
    assert driver.execute_script("return document.getElementById('pad').width") == 288
    scene = load_dataset("mnist-scenes", "test", data_dir=DATA_DIR, limit=1, seed=5).images[0, 0]
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    upload = driver.find_element("id", "upload")
    driver.execute_script("arguments[0].style.display = 'block'", upload)
    upload.send_keys(str(path))
    script.wait_for(driver, "state.result && document.getElementById('status').dataset.state "
                            "=== 'ready' && document.querySelectorAll('.det-box').length > 0")
    assert main(["detect", str(run), str(path), "--json", "--threshold", str(LOW)]) == 0
    expected = json.loads(capsys.readouterr().out)[0]["boxes"]
    assert len(expected) >= 2
    assert shown_boxes(driver) == [(b["label"], b["score"]) for b in expected]
    left_to_right = sorted(expected, key=lambda b: b["box"][0])
    assert driver.find_element("id", "predicted-label").text == \
        " ".join(b["label"] for b in left_to_right)
    # The picture with its boxes, the saliency and every convolution's maps are painted.
    assert canvas_spread(driver, "#det-view")[0] > 5.0
    assert canvas_spread(driver, "#why-saliency")[0] > 5.0
    for index, layer in enumerate(server.info["layers"]):
        if layer["conv"]:
            spreads = canvas_spread(driver, f"canvas.fmap[data-layer='{index}']")
            assert len(spreads) == layer["shape"][0] and max(spreads) > 1.0, index
    # Choosing another box shows its saliency.
    driver.find_element("css selector", ".det-box[data-box='1']").click()
    script.wait_for(driver, "document.querySelector(\".det-box[data-box='1']\")"
                            ".classList.contains('chosen')")
    assert f"“{expected[1]['label']}”" in driver.find_element("id", "why-caption").text


def test_digits_drawn_on_the_pad_get_the_boxes_detect_finds_in_them(detection_page, tmp_path,
                                                                    capsys):
    from minicnn.cli import main

    driver, script, _, run = detection_page
    driver.find_element("id", "clear").click()
    for digit, (dx, dy) in (("7", (0.0, 0.05)), ("1", (0.35, 0.1)), ("2", (0.55, 0.5))):
        strokes = [[(dx + x * 0.4, dy + y * 0.4) for x, y in stroke]
                   for stroke in script.DIGITS[digit]]
        script.draw(driver, strokes)
    script.settled(driver)
    drawn = tmp_path / "drawn.png"
    drawn.write_bytes(pad_png(driver))
    assert main(["detect", str(run), str(drawn), "--json", "--threshold", str(LOW)]) == 0
    expected = json.loads(capsys.readouterr().out)[0]["boxes"]
    assert len(expected) >= 1
    assert shown_boxes(driver) == [(b["label"], b["score"]) for b in expected]
