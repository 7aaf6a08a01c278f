"""ONNX export: ONNX Runtime runs the exported graph to minicnn's eval forward, on a grid of
layer configurations and on every model; the file is checker-clean, has a free batch, and
carries the run's metadata; what cannot be exported is refused naming the layer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from minicnn import models, nn  # noqa: E402
from minicnn import onnx as mc_onnx  # noqa: E402
from minicnn.onnx import OnnxExportError  # noqa: E402
from minicnn.runfolder import RunMeta  # noqa: E402

#: The issue's target: ONNX Runtime within 1e-5 relative of minicnn's eval forward (relative
#: to each entry, with a floor of 1e-5 of the output's largest magnitude for entries that
#: cancelled to near 0). Measured on this grid and the models over seeds 0-2: at most 7.5e-7
#: of the largest magnitude (vgg-small: float32 sums in another order), a 13x margin; a
#: wrong pad, stride, window or layout gives O(1).
RTOL = 1e-5


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def assert_matches(actual, expected, what=""):
    scale = float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * max(scale, 1e-12),
                               err_msg=what)


def conv(*args, **kwargs):
    return nn.Conv2d(*args, backend="im2col", rng=1, **kwargs)


def with_stats(model, rng):
    """Give every batch norm non-trivial running statistics and affine parameters, so that
    the eval forward really uses them."""
    for layer in model.modules():
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            count = layer.num_features
            layer.running_mean[...] = rng.standard_normal(count)
            layer.running_var[...] = rng.uniform(0.5, 2.0, count)
            if layer.affine:
                layer.weight.data[...] = rng.uniform(0.5, 1.5, count)
                layer.bias.data[...] = rng.standard_normal(count)
    return model


#: (id, input shape of one sample, layers): every layer of minicnn.nn and every Conv2d option.
LAYER_GRID = [
    ("conv-stride-pad", (3, 9, 9), lambda: [conv(3, 4, 3, stride=2, padding=1)]),
    ("conv-rect-nobias", (2, 8, 7), lambda: [conv(2, 4, (3, 2), stride=(1, 2), padding=(2, 0),
                                                   bias=False)]),
    ("conv-same-even", (2, 8, 8), lambda: [conv(2, 3, 4, padding="same")]),
    ("conv-same-dilated", (2, 9, 9), lambda: [conv(2, 3, 3, padding="same", dilation=2)]),
    ("conv-dilation", (2, 10, 10), lambda: [conv(2, 3, 3, dilation=(2, 3), padding=1)]),
    ("conv-groups", (4, 7, 7), lambda: [conv(4, 6, 3, groups=2, padding=1)]),
    ("conv-depthwise", (4, 7, 7), lambda: [conv(4, 4, 3, groups=4, stride=2)]),
    ("maxpool", (2, 9, 9), lambda: [nn.MaxPool2d(3, stride=2, padding=1)]),
    ("avgpool-pad", (2, 9, 9), lambda: [nn.AvgPool2d(3, stride=2, padding=1)]),
    ("avgpool-nopad-count", (2, 9, 9), lambda: [nn.AvgPool2d(3, stride=2, padding=1,
                                                               count_include_pad=False)]),
    ("adaptive-global", (3, 5, 7), lambda: [nn.AdaptiveAvgPool2d(1)]),
    ("adaptive-even", (3, 8, 6), lambda: [nn.AdaptiveAvgPool2d((4, 3))]),
    ("adaptive-uneven", (3, 7, 5), lambda: [nn.AdaptiveAvgPool2d((3, 2))]),
    ("bn2d", (3, 5, 5), lambda: [nn.BatchNorm2d(3, eps=1e-3)]),
    ("bn2d-noaffine", (3, 5, 5), lambda: [nn.BatchNorm2d(3, affine=False)]),
    ("bn1d", (6,), lambda: [nn.BatchNorm1d(6)]),
    ("bn1d-3d", (4, 5), lambda: [nn.BatchNorm1d(4)]),
    ("linear", (6,), lambda: [nn.Linear(6, 4, rng=2), nn.ReLU(), nn.Linear(4, 3, bias=False,
                                                                          rng=3)]),
    ("activations", (5,), lambda: [nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh()]),
    ("flatten-dropout", (2, 3, 4), lambda: [nn.Dropout(0.3), nn.Flatten(), nn.Linear(24, 5,
                                                                                    rng=4)]),
    ("flatten-partial", (2, 3, 4), lambda: [nn.Flatten(2, 3)]),
    ("basic-block", (4, 8, 8), lambda: [nn.BasicBlock(4, 4, backend="im2col", rng=5)]),
    ("basic-block-down", (4, 8, 8), lambda: [nn.BasicBlock(4, 6, stride=2, backend="im2col",
                                                           rng=6)]),
    ("fusable-numba", (1, 8, 8), lambda: [nn.Conv2d(1, 3, 3, padding=1, backend="numba", rng=7),
                                          nn.ReLU(backend="numba"),
                                          nn.MaxPool2d(2, backend="numba")]),
]


@pytest.mark.parametrize("case", LAYER_GRID, ids=[case[0] for case in LAYER_GRID])
def test_layer_grid_matches_onnx_runtime_and_round_trips(case, tmp_path, rng):
    _, shape, make = case
    model = with_stats(nn.Sequential(*make()), rng).eval()
    path = mc_onnx.export(model, tmp_path / "m.onnx", shape)
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    expected = model(x)
    assert_matches(run_onnx(path, x), expected, "ONNX Runtime vs minicnn")
    # Back in: the same numbers (uneven adaptive pooling has no layer to come back as).
    if case[0] != "adaptive-uneven":
        again = mc_onnx.load(path).eval()
        assert_matches(again(x), expected, "minicnn.onnx.load vs the exported model")


@pytest.mark.parametrize("name, channels, side", [
    ("lenet5", 1, 28), ("mnist-cnn", 1, 28), ("vgg-small", 3, 32), ("resnet-small", 3, 32),
    ("separable-cnn", 1, 28), ("tiny-detector", 1, 32)])
def test_every_model_matches_onnx_runtime(name, channels, side, tmp_path, rng):
    model = with_stats(models.build(name, channels, 10, image_size=side, backend="im2col",
                                    rng=0), rng).eval()
    meta = RunMeta(input_shape=(channels, side, side), mean=[0.5] * channels,
                   std=[0.25] * channels, classes=[f"c{i}" for i in range(10)], model=name,
                   dataset="mnist")
    path = mc_onnx.export(model, tmp_path / f"{name}.onnx", (channels, side, side), meta=meta)
    # A free batch: the same file runs 1 and 4 images.
    for batch in (1, 4):
        x = rng.standard_normal((batch, channels, side, side)).astype(np.float32)
        assert_matches(run_onnx(path, x), model(x), f"{name}, batch {batch}")
    again = mc_onnx.read(path)
    assert [k for k in again.model.state_dict()] == [k for k in model.state_dict()]
    if name == "tiny-detector":
        assert (again.model.stride, again.model.prior) == (model.stride, model.prior)


def test_file_is_checker_clean_with_free_batch_and_metadata(tmp_path):
    model = models.build("lenet5", 1, 3, rng=0)
    meta = RunMeta(input_shape=(1, 28, 28), mean=[0.1307], std=[0.3081],
                   classes=["zero", "one", "two"], model="lenet5", dataset="mnist")
    path = mc_onnx.export(model, tmp_path / "deep" / "m.onnx", (1, 28, 28), meta=meta)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["minicnn.mean"] == [0.1307] and props["minicnn.std"] == [0.3081]
    assert props["minicnn.classes"] == ["zero", "one", "two"]
    assert props["minicnn.model"] == "lenet5"
    # Written atomically: no temporary file is left beside it.
    assert os.listdir(path.parent) == ["m.onnx"]


class Doubler(nn.Module):
    def forward(self, x):
        return 2 * x


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Linear(3, 3, rng=0), Doubler())
    with pytest.raises(OnnxExportError, match=r"layer '1' \(Doubler\)"):
        mc_onnx.export(model, "/nonexistent/never-written.onnx", (3,))


def test_batchnorm_without_running_stats_is_refused(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(OnnxExportError, match=r"layer '1' \(BatchNorm2d\).*running"):
        mc_onnx.export(model, tmp_path / "m.onnx", (1, 5, 5))
    assert not (tmp_path / "m.onnx").exists()


def test_mnist_test_set_predictions_agree(tmp_path):
    """Every one of the 10,000 MNIST test images gets the same class from ONNX Runtime as
    from minicnn (LeNet-5 with fixed random weights: no training needed to compare)."""
    from minicnn.data import DataError, load_dataset

    try:
        test_set = load_dataset("mnist", "test", download=False)
    except DataError:
        pytest.skip("MNIST is not available here (set MINICNN_DATA_DIR)")
    images = ((test_set.images.astype(np.float32) / 255.0 - test_set.mean[0])
              / test_set.std[0]).reshape(-1, 1, 28, 28)
    # The default (numba) backend: its fused Conv-ReLU-MaxPool blocks are what runs here.
    model = models.build("lenet5", 1, 10, rng=3).eval()
    path = mc_onnx.export(model, tmp_path / "lenet5.onnx", (1, 28, 28))
    ours = np.concatenate([model(images[i:i + 2000]) for i in range(0, len(images), 2000)])
    theirs = run_onnx(path, images)
    assert_matches(theirs, ours)
    np.testing.assert_array_equal(theirs.argmax(axis=1), ours.argmax(axis=1))


def test_input_shape_the_model_cannot_take_is_refused(tmp_path):
    model = models.build("lenet5", 1, 10, rng=0)
    with pytest.raises(OnnxExportError, match=r"cannot take input_shape \(3, 28, 28\)"):
        mc_onnx.export(model, tmp_path / "m.onnx", (3, 28, 28))
    assert model.training and not (tmp_path / "m.onnx").exists()
