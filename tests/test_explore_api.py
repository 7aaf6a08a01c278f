"""``minicnn explore``'s JSON API, through a real HTTP server on loopback.

What the page shows must be what minicnn computes: the prediction equals ``minicnn predict``'s,
every layer's values equal the layers run by hand, the saliency equals central differences,
a convolution's hover data equals a window cut from the padded input by hand and its receptive
field equals one found by following index sets back through the layers. Bad requests get a 4xx
with a message and the server keeps answering. Run folders are trained for a moment on the
built-in synthetic data set (no data files needed)."""

import http.client
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicnn import models, nn
from minicnn.cli import main
from minicnn.explore import Explorer, open_run, start_in_thread
from minicnn.explore import encode
from minicnn.explore.server import MAX_UPLOAD
from minicnn.preprocess import decode_rgba, prepare_image, prepare_rgba
from minicnn.train import RunMeta, TrainConfig, fit, load_run


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def png_bytes(array: np.ndarray, mode=None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def drawn_digit(seed: int, size: int = 200, dark_on_white: bool = False) -> np.ndarray:
    """A thick random stroke, off centre, as a person draws on a pad (uint8 gray)."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (size, size), 0)
    from PIL import ImageDraw

    points = [tuple(rng.uniform(0.15, 0.85, 2) * size) for _ in range(4)]
    ImageDraw.Draw(image).line(points, fill=255, width=size // 12, joint="curve")
    array = np.asarray(image)
    return 255 - array if dark_on_white else array


class Client:
    """A small HTTP client for the server under test."""

    def __init__(self, server):
        self.host, self.port = server.server_address[:2]
        self.base = server.url

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.base + path.lstrip("/"), timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def analyse(self, data: bytes, enhance: bool = True):
        request = urllib.request.Request(
            self.base + f"api/analyse?enhance={int(enhance)}", data=data, method="POST",
            headers={"Content-Type": "image/png"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def raw(self, method: str, path: str, body: bytes | None = None, headers=None):
        """Send exactly this path (no normalising), return (status, headers, body bytes)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        connection.putrequest(method, path, skip_accept_encoding=True,
                              skip_host="Host" in (headers or {}))
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        if body is not None and "Content-Length" not in (headers or {}):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, dict(response.getheaders()), data

    def alive(self) -> bool:
        return self.get("/api/info")[0] == 200


def serve(explorer):
    server, thread = start_in_thread(explorer)
    return server, Client(server)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore") / "run"
    fit(TrainConfig(dataset="synthetic", model="lenet5", epochs=1, batch_size=32, lr=0.05,
                    limit=600, test_limit=100, val_size=0, seed=5, backend="im2col"),
        out, progress=False, log=None)
    return out


@pytest.fixture(scope="module")
def served(run_folder):
    server, client = serve(open_run(run_folder))
    yield client
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------------------
# Preprocessing steps (minicnn/preprocess.py)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset,dark", [("mnist", True), ("mnist", False),
                                          ("fashion-mnist", False)])
def test_kept_steps_end_in_the_image_predict_uses(tmp_path, dataset, dark):
    path = tmp_path / "d.png"
    Image.fromarray(drawn_digit(1, dark_on_white=dark)).save(path)
    plain = prepare_image(path, (1, 28, 28), dataset)
    kept = prepare_rgba(decode_rgba(path.read_bytes()), (1, 28, 28), dataset, keep_steps=True)
    np.testing.assert_array_equal(kept.image, plain.image)
    assert kept.inverted is plain.inverted is dark
    names = [name for name, _ in kept.steps]
    assert names[0] == "as drawn" and names[2] == "cropped to the ink"
    assert names[-1].endswith("in 28x28") and names[3].startswith("scaled to ")
    np.testing.assert_array_equal(kept.steps[-1][1], plain.image[0])
    assert plain.steps == []            # only kept when asked for


def test_decode_refuses_what_is_not_an_image_or_too_large():
    from minicnn.data import DataError

    with pytest.raises(DataError, match="cannot read image"):
        decode_rgba(b"GIF89a not really")
    big = png_bytes(np.zeros((300, 400), np.uint8))
    with pytest.raises(DataError, match="400x300 is more than the 100,000 pixels"):
        decode_rgba(big, max_pixels=100_000)


# ---------------------------------------------------------------------------------------------
# Predictions, layers, saliency
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("enhance", [True, False])
def test_predictions_equal_minicnn_predict(served, run_folder, tmp_path, capsys, enhance):
    paths = []
    for seed in range(3):
        path = tmp_path / f"{seed}.png"
        path.write_bytes(png_bytes(drawn_digit(seed, dark_on_white=seed == 1)))
        paths.append(path)
    assert main(["predict", str(run_folder), *map(str, paths), "--json", "--top", "10",
                 *([] if enhance else ["--no-preprocess"])]) == 0
    expected = json.loads(capsys.readouterr().out)
    classes = served.get("/api/info")[1]["classes"]
    for path, entry in zip(paths, expected):
        status, result = served.analyse(path.read_bytes(), enhance)
        assert status == 200, result
        by_label = {t["label"]: t["probability"] for t in entry["top"]}
        np.testing.assert_allclose(result["probabilities"], [by_label[c] for c in classes],
                                   rtol=1e-5, atol=1e-7)
        assert classes[result["predicted"]] == entry["top"][0]["label"]
        assert result["inverted"] is entry["inverted"]


def test_every_layer_equals_the_layers_run_by_hand(served, run_folder, tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(drawn_digit(7)))
    status, result = served.analyse(path.read_bytes())
    assert status == 200
    _, model, meta = load_run(run_folder)
    model.eval()
    x = ((prepare_image(path, meta.input_shape, meta.dataset).image
          - np.float32(meta.mean[0])) / np.float32(meta.std[0]))[None]
    assert len(result["layers"]) == len(model) == 12
    for index, layer in enumerate(model):
        x = layer(x)
        status, exact = served.get(f"/api/layer?input={result['id']}&layer={index}")
        assert status == 200 and exact["kind"] == type(layer).__name__
        # The server computes on its own thread, where the kernels may split the work
        # otherwise (the detector's layers measured up to 1.4e-6 apart): 1e-5.
        np.testing.assert_allclose(encode.unexact(exact), x[0], rtol=1e-5, atol=1e-5)
        shown = result["layers"][index]
        assert shown["shape"] == list(x.shape[1:])
        if x.ndim == 4:     # pictures: the bytes read back within half a step
            picture = shown["maps"]
            assert picture["signed"] is bool(x.min() < 0)
            np.testing.assert_allclose(encode.unpicture(picture), x[0], atol=half_step(picture))
            assert picture["scale"] == pytest.approx(float(np.abs(x).max()))
        else:
            np.testing.assert_allclose(encode.unexact(shown["values"]), x[0], rtol=1e-6,
                                       atol=1e-6)
    # The preprocessing steps arrive too, the normalised input last.
    assert result["steps"][-1]["name"].startswith("normalised")
    np.testing.assert_allclose(encode.unpicture(result["steps"][-1]),
                               ((prepare_image(path, meta.input_shape, meta.dataset).image[0]
                                 - meta.mean[0]) / meta.std[0]),
                               atol=half_step(result["steps"][-1]))


def half_step(picture: dict) -> float:
    """Half of one of the 255 steps a picture has: over [0, scale] or [-scale, scale]."""
    return (2 if picture["signed"] else 1) * picture["scale"] / 255 * 0.51


def tiny_explorer(rng, channels=1, size=8):
    """conv 3x3 (pad 1) -> ReLU -> max pool -> conv 2x2 -> flatten -> linear: small enough for
    central differences on every input pixel."""
    model = nn.Sequential(
        nn.Conv2d(channels, 3, 3, padding=1, rng=rng, backend="im2col"), nn.ReLU(),
        nn.MaxPool2d(2, backend="im2col"), nn.Conv2d(3, 4, 2, rng=rng, backend="im2col"),
        nn.Tanh(), nn.Flatten(), nn.Linear(4 * (size // 2 - 1) ** 2, 5, rng=rng))
    meta = RunMeta(input_shape=(channels, size, size), mean=[0.3] * channels,
                   std=[0.7] * channels, classes=list("abcde"), model="tiny", dataset="tiny")
    return Explorer(model, meta, name="tiny")


def finite_differences(explorer, pixels: np.ndarray, class_index: int, eps=1e-4):
    """d(logit) / d(pixel) by central differences, in float64 on a float64 copy."""
    import copy

    model64 = copy.deepcopy(explorer.model).double()
    mean = np.asarray(explorer.meta.mean, np.float64).reshape(-1, 1, 1)
    std = np.asarray(explorer.meta.std, np.float64).reshape(-1, 1, 1)

    def score(p):
        return model64(((p - mean) / std)[None])[0, class_index]

    return central_differences(score, pixels, eps)


def assert_refused(served, cases):
    """Each ``name: (call, status, message)`` gets that status and a message containing that
    text, without a traceback, and the server keeps serving."""
    for name, (call, expected_status, message) in cases.items():
        status, body = call()
        assert status == expected_status, (name, status, body)
        assert message in body["error"], (name, body)
        assert "Traceback" not in body["error"]
        assert served.alive(), name


def central_differences(score, pixels: np.ndarray, eps: float) -> np.ndarray:
    """``d score / d pixels`` by central differences in float64, one pixel at a time."""
    grad = np.zeros(pixels.shape, dtype=np.float64)
    for index in np.ndindex(pixels.shape):
        plus, minus = pixels.astype(np.float64), pixels.astype(np.float64)
        plus[index] += eps
        minus[index] -= eps
        grad[index] = (score(plus) - score(minus)) / (2 * eps)
    return grad


@pytest.mark.parametrize("channels", [1, 3])
def test_saliency_equals_central_differences(rng, channels):
    explorer = tiny_explorer(rng, channels)
    server, client = serve(explorer)
    try:
        image = rng.integers(0, 256, size=(8, 8, channels) if channels == 3 else (8, 8),
                             dtype=np.uint8)
        data = png_bytes(image)
        status, result = client.analyse(data, enhance=False)
        assert status == 200
        pixels = prepare_rgba(decode_rgba(data), (channels, 8, 8), enhance=False).image
        gradient = encode.unexact(result["saliency"])
        assert result["saliency"]["class"] == result["predicted"]
        expected = finite_differences(explorer, pixels, result["predicted"])
        assert np.abs(expected).max() > 1e-3        # not a trivially zero case
        np.testing.assert_allclose(gradient, expected, rtol=2e-3, atol=2e-4)
        other = (result["predicted"] + 2) % 5
        status, chosen = client.get(f"/api/saliency?input={result['id']}&class={other}")
        assert status == 200 and chosen["class"] == other
        np.testing.assert_allclose(encode.unexact(chosen), finite_differences(
            explorer, pixels, other), rtol=2e-3, atol=2e-4)
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# Inside a convolution: window, im2col column, dot product, receptive field
# ---------------------------------------------------------------------------------------------
def boxes_by_index_sets(layers, index, y, x, input_sizes):
    """The receptive field found the slow way: the set of input rows/columns each layer's
    outputs read, followed back one layer at a time (Conv2d, pools, pointwise layers)."""
    rows, cols = {y}, {x}
    boxes = {}
    for i in range(index, -1, -1):
        layer = layers[i]
        height, width = input_sizes[i]
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s = layer.kernel_size, layer.stride
            d = layer.dilation if isinstance(layer, nn.Conv2d) else (1, 1)
            top, left = ((layer._pads[0], layer._pads[2]) if isinstance(layer, nn.Conv2d)
                         else layer.padding)
            rows = {r * s[0] - top + d[0] * a for r in rows for a in range(k[0])}
            cols = {c * s[1] - left + d[1] * b for c in cols for b in range(k[1])}
            rows = {r for r in rows if 0 <= r < height}
            cols = {c for c in cols if 0 <= c < width}
        boxes[str(i)] = [min(rows), max(rows), min(cols), max(cols)]
    return boxes


def padded_window(layer_input, layer, channels, y, x):
    """The kernel's window cut by hand from the zero-padded input: (C, kH, kW)."""
    top, bottom, left, right = layer._pads
    padded = np.pad(layer_input[channels], ((0, 0), (top, bottom), (left, right)))
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    return padded[:, y * sh:y * sh + dh * (kh - 1) + 1:dh, x * sw:x * sw + dw * (kw - 1) + 1:dw]


def check_convolution(client, explorer, result, layer_index, channel, y, x):
    layer = explorer.layers[layer_index]
    status, d = client.get(f"/api/conv?input={result['id']}&layer={layer_index}"
                           f"&channel={channel}&y={y}&x={x}")
    assert status == 200, d
    analysis = explorer.get(result["id"])
    layer_input = explorer.layer_input(analysis, layer_index)
    group = channel // (layer.out_channels // layer.groups)
    per_group = layer.in_channels // layer.groups
    channels = slice(group * per_group, (group + 1) * per_group)
    assert d["input_channels"] == list(range(channels.start, channels.stop))
    window = padded_window(layer_input, layer, channels, y, x)
    np.testing.assert_array_equal(encode.unexact(d["window"]), window)
    np.testing.assert_array_equal(encode.unexact(d["unrolled"]), window.reshape(-1))
    np.testing.assert_array_equal(encode.unexact(d["kernel"]),
                                  layer.weight.data[channel].reshape(-1))
    by_hand = float((window.astype(np.float64) * layer.weight.data[channel]).sum()
                    + (0 if layer.bias is None else layer.bias.data[channel]))
    assert d["dot"] == pytest.approx(by_hand, rel=1e-5, abs=1e-5)
    assert d["value"] == pytest.approx(float(analysis.outputs[layer_index][channel, y, x]))
    assert d["dot"] == pytest.approx(d["value"], rel=1e-4, abs=1e-5)
    sizes = [explorer.layer_input(analysis, i).shape[-2:] for i in range(layer_index + 1)]
    assert d["boxes"] == boxes_by_index_sets(explorer.layers, layer_index, y, x, sizes)
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    top, left = y * sh - layer._pads[0], x * sw - layer._pads[2]
    assert d["window_box"] == [top, top + dh * (kh - 1), left, left + dw * (kw - 1)]
    return d


def test_convolution_hover_data_of_a_trained_run(served, run_folder):
    explorer = open_run(run_folder)
    server, client = serve(explorer)
    try:
        status, result = client.analyse(png_bytes(drawn_digit(3)))
        assert status == 200
        # LeNet-5: conv 0 (5x5, pad 2) and conv 3 (5x5, no pad, after a pool); corners reach
        # into the padding.
        for y, x in ((0, 0), (27, 27), (13, 6), (0, 27)):
            d = check_convolution(client, explorer, result, 0, 4, y, x)
        assert d["window_box"] == [-2, 2, 25, 29]
        for y, x in ((0, 0), (9, 9), (4, 7)):
            d = check_convolution(client, explorer, result, 3, 11, y, x)
        # Conv 3's output (4, 7) sees 5 rows of pool output = 10 of conv 0 = 14 input rows.
        assert d["boxes"]["0"] == [6, 19, 12, 25]
    finally:
        server.shutdown()
        server.server_close()


def test_convolution_hover_data_with_stride_dilation_and_groups(rng):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=rng, backend="im2col"), nn.ReLU(),
        nn.Conv2d(4, 6, 3, dilation=2, padding=2, groups=2, rng=rng, backend="im2col"),
        nn.AvgPool2d(2, backend="im2col"), nn.Conv2d(6, 2, (1, 2), rng=rng, backend="im2col"),
        nn.Flatten(), nn.Linear(2 * 3 * 2, 3, rng=rng))
    meta = RunMeta(input_shape=(3, 13, 13), mean=[0.5] * 3, std=[0.25] * 3,
                   classes=["a", "b", "c"], model="test", dataset="test")
    explorer = Explorer(model, meta)
    server, client = serve(explorer)
    try:
        image = rng.integers(0, 256, (13, 13, 3), dtype=np.uint8)
        status, result = client.analyse(png_bytes(image))
        assert status == 200
        for layer, channel, y, x in ((0, 3, 0, 6), (2, 4, 6, 0), (2, 1, 3, 3), (4, 1, 2, 1)):
            check_convolution(client, explorer, result, layer, channel, y, x)
    finally:
        server.shutdown()
        server.server_close()


def test_receptive_field_is_where_the_gradient_reaches(rng):
    """With positive weights and no ReLU, an output's gradient is non-zero exactly on its
    receptive field: an independent check of the box on the network's input."""
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, rng=rng, backend="im2col"),
        nn.AvgPool2d(2, backend="im2col"),
        nn.Conv2d(2, 2, 3, stride=2, rng=rng, backend="im2col"), nn.Flatten(),
        nn.Linear(2 * 4 * 4, 2, rng=rng))
    for conv in (model[0], model[2]):
        conv.weight.data[...] = np.abs(conv.weight.data) + 0.1
    meta = RunMeta(input_shape=(1, 20, 20), mean=[0.0], std=[1.0], classes=["a", "b"],
                   model="t", dataset="t")
    explorer = Explorer(model, meta)
    analysis, _, _ = explorer.analyse(png_bytes(rng.integers(0, 256, (20, 20), np.uint8)),
                                      enhance=False)
    for y, x in ((0, 0), (1, 3), (3, 3)):
        d = explorer.convolution(analysis.id, "2", 1, y, x)
        convs = model[:3]
        convs(analysis.network_input)
        dy = np.zeros((1, 2, 4, 4), np.float32)
        dy[0, 1, y, x] = 1
        reached = np.argwhere(convs.backward(dy)[0, 0] != 0)
        top, left = reached.min(axis=0)
        bottom, right = reached.max(axis=0)
        assert d["boxes"]["0"] == [top, bottom, left, right]


@pytest.mark.parametrize("name", ["resnet-small", "vgg-small", "separable-cnn"])
def test_every_model_of_the_zoo_can_be_explored(rng, name):
    channels = 1 if name == "separable-cnn" else 3
    size = 28 if channels == 1 else 32
    model = models.build(name, in_channels=channels, num_classes=10, image_size=size,
                         backend="im2col", rng=1)
    meta = RunMeta(input_shape=(channels, size, size), mean=[0.5] * channels,
                   std=[0.25] * channels, classes=[f"c{i}" for i in range(10)], model=name,
                   dataset="cifar10" if channels == 3 else "fashion-mnist")
    explorer = Explorer(model, meta)
    image = rng.integers(0, 256, (40, 50, 3) if channels == 3 else (40, 50), dtype=np.uint8)
    analysis, gradient, predicted = explorer.analyse(png_bytes(image))
    assert gradient.shape == (channels, size, size) and np.abs(gradient).max() > 0
    np.testing.assert_allclose(analysis.probabilities.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(analysis.outputs[-1], model(analysis.network_input)[0],
                               rtol=1e-5, atol=1e-5)
    info = explorer.info()
    assert [layer["shape"] for layer in info["layers"]] == [list(o.shape)
                                                            for o in analysis.outputs]
    conv = next(i for i, layer in enumerate(explorer.layers) if isinstance(layer, nn.Conv2d))
    d = explorer.convolution(analysis.id, explorer.layer_names[conv], 0, 5, 5)
    assert d["dot"] == pytest.approx(d["value"], rel=1e-4, abs=1e-5)
    # The last spatial layer (global average pooling in these nets) sees the whole image.
    blocks = [i for i, o in enumerate(analysis.outputs) if o.ndim == 3]
    from minicnn.explore.geometry import receptive_field

    sizes = [explorer.layer_input(analysis, i).shape[-2:] for i in range(blocks[-1] + 1)]
    field = receptive_field(explorer.layers, blocks[-1], 0, 0, sizes)
    assert field["boxes"][0] == (0, size - 1, 0, size - 1)


# ---------------------------------------------------------------------------------------------
# Bad requests: a 4xx with a message, and the server keeps serving
# ---------------------------------------------------------------------------------------------
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(served):
    status, result = served.analyse(png_bytes(drawn_digit(2)))
    assert status == 200
    input_id = result["id"]
    huge = png_bytes(np.zeros((4000, 4000), np.uint8))  # 16 Mpixels in a few kB
    cases = {
        "not an image": (lambda: served.analyse(b"this is not an image" * 10), 415,
                         "not a usable image"),
        "too many pixels": (lambda: served.analyse(huge), 413, "more than the 12,000,000"),
        "empty body": (lambda: served.analyse(b""), 400, "no image"),
        "unknown layer": (lambda: served.get(f"/api/layer?input={input_id}&layer=conv9"), 404,
                          "unknown layer 'conv9'"),
        "unknown input": (lambda: served.get("/api/layer?input=feedbeef&layer=0"), 404,
                          "unknown input"),
        "missing parameter": (lambda: served.get(f"/api/conv?input={input_id}&layer=0"), 400,
                              "missing parameter 'channel'"),
        "not a number": (lambda: served.get(f"/api/conv?input={input_id}&layer=0&channel=a"
                                            "&y=0&x=0"), 400, "must be a whole number"),
        "out of range": (lambda: served.get(f"/api/conv?input={input_id}&layer=0&channel=0"
                                            "&y=28&x=0"), 400, "y must be 0..27"),
        "not a conv": (lambda: served.get(f"/api/conv?input={input_id}&layer=1&channel=0"
                                          "&y=0&x=0"), 400, "not a Conv2d"),
        "bad class": (lambda: served.get(f"/api/saliency?input={input_id}&class=10"), 400,
                      "class must be 0..9"),
        "unknown API": (lambda: served.get("/api/nothing"), 404, "nothing at"),
    }
    assert_refused(served, cases)


@pytest.mark.parametrize("path", [
    "/../../etc/passwd", "../../etc/passwd", "/static/../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/static/app.js/../../x",
    "/static/", "/static/..%2fexplore%2fserver.py", "/analysis.py", "/static/../__init__.py",
])
def test_no_file_outside_the_page_is_served(served, path):
    status, headers, body = served.raw("GET", path)
    assert status == 404, (path, body[:200])
    assert b"root:" not in body and b"import" not in body
    assert "nothing at" in json.loads(body)["error"]
    assert served.alive()


def test_oversized_uploads_are_refused_unread(served):
    # Refused on the declared length, before a byte of the body is read.
    status, _, body = served.raw("POST", "/api/analyse", b"",
                                 {"Content-Length": str(MAX_UPLOAD + 1)})
    assert status == 413 and b"at most 8,388,608" in body
    status, _, body = served.raw("POST", "/api/analyse", b"x",
                                 {"Content-Length": "x", "Host": "127.0.0.1"})
    assert status == 400 and b"bad Content-Length" in body
    assert served.alive()


def test_chunked_uploads_need_a_length(served):
    status, _, body = served.raw("POST", "/api/analyse", b"5\r\nhello\r\n0\r\n\r\n",
                                 {"Transfer-Encoding": "chunked"})
    assert status == 411 and b"Content-Length" in body
    assert served.alive()


def test_requests_to_another_host_name_are_refused(served):
    """A page elsewhere that re-points its DNS name at 127.0.0.1 cannot use the API."""
    status, _, body = served.raw("GET", "/api/info", headers={"Host": "evil.example:8765"})
    assert status == 403 and b"loopback" in body
    for host in ("localhost:1", "127.0.0.1", "[::1]:8765"):
        assert served.raw("GET", "/api/info", headers={"Host": host})[0] == 200


def test_the_page_is_self_contained(served):
    status, headers, body = served.raw("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    html = body.decode()
    folder = Path(__file__).parents[1] / "minicnn" / "explore" / "static"
    for name in ("app.js", "style.css", "favicon.svg"):
        assert f"/static/{name}" in html
        status, headers, content = served.raw("GET", f"/static/{name}")
        assert status == 200 and content == (folder / name).read_bytes()
    for file in folder.iterdir():      # nothing loaded from elsewhere (fonts, scripts, CDNs)
        text = file.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text and "@import" not in text and "url(" not in text
