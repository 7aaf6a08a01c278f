"""ONNX import: graphs PyTorch exports (of minicnn's models and a grid of layers) load into
minicnn and give PyTorch's outputs, before and after one training step; bad files are refused
in one line naming the file, the node and the operator."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from minicnn import models, nn  # noqa: E402
from minicnn import onnx as mc_onnx  # noqa: E402
from minicnn.onnx import OnnxImportError  # noqa: E402

from torch_oracle import (assert_close, copy_state, to_numpy, to_torch,  # noqa: E402
                          torch_basic_block)

pytestmark = pytest.mark.torch


def torch_twin(layer):
    """The torch module computing what minicnn ``layer`` computes (state copied separately)."""
    tnn = torch.nn
    if isinstance(layer, nn.Sequential):
        return tnn.Sequential(*[torch_twin(child) for child in layer])
    if isinstance(layer, nn.BasicBlock):
        return torch_basic_block(layer.conv1.in_channels, layer.conv1.out_channels,
                                 layer.conv1.stride[0])
    if isinstance(layer, nn.Conv2d):
        return tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                          layer.stride, layer.padding, layer.dilation, layer.groups,
                          bias=layer.bias is not None)
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        kind = tnn.BatchNorm2d if isinstance(layer, nn.BatchNorm2d) else tnn.BatchNorm1d
        return kind(layer.num_features, layer.eps, layer.momentum)
    if isinstance(layer, nn.Linear):
        return tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if isinstance(layer, nn.MaxPool2d):
        return tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, nn.AvgPool2d):
        return tnn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                             count_include_pad=layer.count_include_pad)
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return tnn.AdaptiveAvgPool2d(layer.output_size)
    if isinstance(layer, nn.Flatten):
        return tnn.Flatten(layer.start_dim, layer.end_dim)
    if isinstance(layer, nn.LeakyReLU):
        return tnn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, nn.Dropout):
        return tnn.Dropout(layer.p)
    return {nn.ReLU: tnn.ReLU, nn.Sigmoid: tnn.Sigmoid, nn.Tanh: tnn.Tanh}[type(layer)]()


def pytorch_onnx(model, shape, path, rng):
    """A torch network equal to minicnn ``model`` (non-trivial running statistics), exported
    by PyTorch the way a PyTorch user would, keeping batch norm (``TrainingMode.PRESERVE``)."""
    for layer in model.modules():
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            layer.running_mean[...] = rng.standard_normal(layer.num_features)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)
    theirs = torch_twin(model)
    copy_state(model, theirs)
    theirs.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(theirs, torch.zeros(2, *shape), str(path), dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"],
                          output_names=["output"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return theirs


def sgd_step_ours(model, x, targets, lr):
    loss = nn.CrossEntropyLoss()
    model.train()
    model.zero_grad()
    loss(model(x), targets)
    model.backward(loss.backward())
    for p in model.parameters():
        p.data -= lr * p.grad


def sgd_step_theirs(model, x, targets, lr):
    model.train()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(to_torch(x)), torch.from_numpy(targets)).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad


GRID = [
    ("conv-pool-linear", (2, 9, 9), lambda: [
        nn.Conv2d(2, 4, 3, stride=2, padding=1, rng=0), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(36, 5, rng=1)]),
    ("dilated-grouped-avg", (4, 10, 10), lambda: [
        nn.Conv2d(4, 6, 3, dilation=2, groups=2, padding=(1, 2), bias=False, rng=0),
        nn.BatchNorm2d(6), nn.LeakyReLU(0.1), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(6 * 4 * 5, 5, rng=1)]),
    ("same-bn1d-sigmoid-tanh", (3, 6, 6), lambda: [
        nn.Conv2d(3, 4, 3, padding="same", rng=0), nn.Tanh(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 6, rng=1), nn.BatchNorm1d(6), nn.Sigmoid(),
        nn.Linear(6, 5, rng=2)]),
    ("basic-blocks", (3, 8, 8), lambda: [
        nn.BasicBlock(3, 4, stride=2, rng=0), nn.BasicBlock(4, 4, rng=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5, rng=2)]),
    ("lenet5", (1, 28, 28), lambda: list(models.build("lenet5", 1, 5, rng=0))),
    ("resnet-small", (3, 16, 16), lambda: list(models.build("resnet-small", 3, 5, image_size=16,
                                                            rng=0))),
    ("vgg-small", (3, 16, 16), lambda: list(models.build("vgg-small", 3, 5, image_size=16,
                                                      rng=0))),
    ("separable-cnn", (1, 16, 16), lambda: list(models.build("separable-cnn", 1, 5,
                                                             image_size=16, rng=0))),
]


@pytest.mark.parametrize("case", GRID, ids=[case[0] for case in GRID])
def test_pytorch_export_loads_and_trains_like_pytorch(case, tmp_path, rng):
    _, shape, make = case
    source = nn.Sequential(*make())
    theirs = pytorch_onnx(source, shape, tmp_path / "torch.onnx", rng)
    ours = mc_onnx.load(tmp_path / "torch.onnx", backend="im2col")
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    with torch.no_grad():
        assert_close(ours(x), to_numpy(theirs(to_torch(x))), "eval forward")
    targets = rng.integers(0, 5, size=4)
    sgd_step_ours(ours, x, targets, lr=0.1)
    sgd_step_theirs(theirs, x, targets, lr=0.1)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        assert_close(ours(x), to_numpy(theirs(to_torch(x))), "eval forward after a step")
    theirs_state = theirs.state_dict()
    for key, value in ours.state_dict().items():
        assert_close(value, to_numpy(theirs_state[key]), key)


def test_pytorch_export_of_the_detector_loads(tmp_path, rng):
    """The detector's raw grid output (its loss is minicnn's own, so no training step)."""
    source = models.build("tiny-detector", 1, 3, image_size=32, rng=0)
    theirs = pytorch_onnx(source, (1, 32, 32), tmp_path / "torch.onnx", rng)
    ours = mc_onnx.load(tmp_path / "torch.onnx", backend="im2col")
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        assert_close(ours(x), to_numpy(theirs(to_torch(x))), "eval forward")


def test_dropout_comes_back_as_dropout(tmp_path, rng):
    model = nn.Sequential(nn.Linear(4, 4, rng=0), nn.Dropout(0.25))
    mc_onnx.export(model, tmp_path / "m.onnx", (4,))
    loaded = mc_onnx.load(tmp_path / "m.onnx")
    assert isinstance(loaded[1], nn.Dropout) and loaded[1].p == 0.25


# -- bad files: one line, naming what is wrong ------------------------------------------------
def exported_lenet(tmp_path):
    return mc_onnx.export(models.build("lenet5", 1, 10, rng=0), tmp_path / "m.onnx", (1, 28, 28))


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


def test_truncated_file_is_refused(tmp_path):
    path = exported_lenet(tmp_path)
    data = path.read_bytes()
    for cut in (7, len(data) // 3, len(data) - 100):
        path.write_bytes(data[:cut])
        with pytest.raises(OnnxImportError) as error:
            mc_onnx.load(path)
        assert str(path) in one_line(error)


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    for content in (b"\xff" * 64, b"", b"not an onnx model at all\n"):
        path = tmp_path / "bad.onnx"
        path.write_bytes(content)
        with pytest.raises(OnnxImportError) as error:
            mc_onnx.load(path)
        one_line(error)
    with pytest.raises(OnnxImportError, match="cannot read"):
        mc_onnx.load(tmp_path / "missing.onnx")


def make_graph(nodes, initializers, in_shape, out_shape):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_unsupported_operator_is_named(tmp_path):
    from onnx import helper

    model = make_graph([helper.make_node("Relu", ["x"], ["h"], name="first"),
                        helper.make_node("Softmax", ["h"], ["y"], name="the_softmax")],
                       [], ["N", 5], ["N", 5])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(OnnxImportError) as error:
        mc_onnx.load(tmp_path / "m.onnx")
    assert "node 'the_softmax' (Softmax)" in one_line(error)


def test_wrong_weight_shape_is_refused(tmp_path):
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((3, 4), np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(5, np.float32), "b")   # 5 values for 3 outputs
    model = make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc",
                                         transB=1)], [weight, bias], ["N", 4], ["N", 3])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(OnnxImportError) as error:
        mc_onnx.load(tmp_path / "m.onnx")
    assert "m.onnx" in one_line(error)


def test_unsupported_attribute_is_named(tmp_path):
    from onnx import helper

    model = make_graph([helper.make_node("MaxPool", ["x"], ["y"], name="pool",
                                         kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
                       [], ["N", 1, 5, 5], ["N", 1, 3, 3])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(OnnxImportError) as error:
        mc_onnx.load(tmp_path / "m.onnx")
    assert "node 'pool' (MaxPool): attribute ceil_mode=1" in one_line(error)


def test_join_that_is_no_basic_block_is_named(tmp_path):
    from onnx import helper, numpy_helper

    shift = numpy_helper.from_array(np.ones(5, np.float32), "shift")
    model = make_graph([helper.make_node("Add", ["x", "shift"], ["y"], name="bias_add")],
                       [shift], ["N", 5], ["N", 5])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(OnnxImportError) as error:
        mc_onnx.load(tmp_path / "m.onnx")
    assert "node 'bias_add' (Add): a fork or join minicnn cannot read" in one_line(error)


def test_computed_weight_is_refused(tmp_path):
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    model = make_graph([helper.make_node("Relu", ["w"], ["w_relu"], name="make_w"),
                        helper.make_node("Gemm", ["x", "w_relu"], ["y"], name="fc", transB=1)],
                       [weight], ["N", 4], ["N", 3])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(OnnxImportError) as error:
        mc_onnx.load(tmp_path / "m.onnx")
    assert "node 'fc' (Gemm): its weight ('w_relu') is computed" in one_line(error)
