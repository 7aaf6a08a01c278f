"""QuantizedModel on a trained LeNet-5: int8 logits close to float, accuracy within a margin,
the file 3.5x+ smaller, save/load exact, damaged files and unsupported layers refused in one
line, BatchNorm folded."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minicnn import models, nn, quant, serialize
from minicnn.config import TrainConfig
from minicnn.data import default_transform, load_dataset
from minicnn.quant.files import QuantFileError
from minicnn.quant.model import QuantizeError
from minicnn.runfolder import load_run
from minicnn.train import fit

DATA_DIR = os.environ.get("MINICNN_DATA_DIR")
HAVE_MNIST = bool(DATA_DIR) and (Path(DATA_DIR) / "mnist").is_dir()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet-5 trained one short epoch (real MNIST when present, else the synthetic set),
    its calibration images and a few hundred test images, normalised."""
    out = tmp_path_factory.mktemp("quant") / "run"
    dataset = "mnist" if HAVE_MNIST else "synthetic"
    fit(TrainConfig(dataset=dataset, model="lenet5", epochs=1, batch_size=64, lr=0.05,
                    limit=4000, test_limit=500, val_size=0, seed=1),
        out, progress=False, log=None)
    config, model, meta = load_run(out)
    model.eval()
    train = load_dataset(dataset, "train", limit=4000, seed=1)
    test = load_dataset(dataset, "test", limit=500, seed=1)
    train.mean = test.mean = meta.mean
    train.std = test.std = meta.std
    calibration = default_transform(train)(train.images[:256].astype(np.float32) / 255)
    x_test = default_transform(test)(test.images.astype(np.float32) / 255)
    return {"out": out, "model": model, "calibration": calibration, "x": x_test,
            "y": test.labels, "qmodel": quant.quantize(model, calibration)}


def test_int8_logits_are_close_to_float(trained):
    model, qmodel, x = trained["model"], trained["qmodel"], trained["x"]
    float_logits, int8_logits = model(x), qmodel(x)
    assert int8_logits.dtype == np.float32 and int8_logits.shape == float_logits.shape
    spread = float(np.abs(float_logits).max())
    assert np.abs(int8_logits - float_logits).max() < 0.1 * spread
    assert (int8_logits.argmax(1) == float_logits.argmax(1)).mean() >= 0.97


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_accuracy_within_a_margin_of_float(trained, method):
    model, x, y = trained["model"], trained["x"], trained["y"]
    qmodel = quant.quantize(model, trained["calibration"], method=method)
    float_accuracy = (model(x).argmax(1) == y).mean()
    int8_accuracy = (qmodel(x).argmax(1) == y).mean()
    assert float_accuracy > 0.5                      # the model did learn something
    assert abs(int8_accuracy - float_accuracy) <= 0.02, (float_accuracy, int8_accuracy)


def test_reference_and_fast_backends_agree_on_a_trained_model(trained):
    qmodel = trained["qmodel"]
    xq = qmodel.quantize_input(trained["x"][:20])
    qmodel.backend = "reference"
    try:
        expected = qmodel.forward_int(xq)
    finally:
        qmodel.backend = "numba"
    np.testing.assert_array_equal(qmodel.forward_int(xq), expected)


def test_file_is_at_least_3_5x_smaller(trained, tmp_path):
    float_file = serialize.save(trained["model"], tmp_path / "model.npz")
    int8_file = quant.save(trained["qmodel"], tmp_path / "model.int8.npz")
    ratio = float_file.stat().st_size / int8_file.stat().st_size
    assert ratio >= 3.5, ratio


def test_save_load_round_trip_is_exact(trained, tmp_path):
    qmodel = trained["qmodel"]
    path = quant.save(qmodel, tmp_path / "model.int8.npz")
    again = quant.load(path)
    assert again.input_shape == qmodel.input_shape and len(again.layers) == len(qmodel.layers)
    for a, b in zip(qmodel.layers, again.layers):
        assert a.kind == b.kind
        for field in ("weight", "weight_scale", "bias", "multiplier", "shift"):
            if hasattr(a, field):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        if hasattr(a, "input"):
            assert a.input == b.input and a.output == b.output
    x = trained["x"][:32]
    np.testing.assert_array_equal(again(x), qmodel(x))
    assert [f.name for f in tmp_path.iterdir()] == ["model.int8.npz"]   # no temporaries left


def _rewrite(path, out, change):
    """Copy the .npz at ``path`` to ``out`` with ``change(arrays)`` applied."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    np.savez(out, **arrays)
    return out


def _header(arrays):
    return json.loads(arrays["header"].tobytes().decode())


def _set_header(arrays, header):
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)


def _newer(arrays):
    header = _header(arrays)
    header["version"] = 99
    _set_header(arrays, header)


def _wrong_dtype(arrays):
    arrays["layers.0.weight"] = arrays["layers.0.weight"].astype(np.float32)


def _wrong_shape(arrays):
    arrays["layers.0.bias"] = arrays["layers.0.bias"][:-1]


def _missing(arrays):
    del arrays["layers.0.weight_scale"]


def _bad_scale(arrays):
    header = _header(arrays)
    header["layers"][0]["input"]["scale"] = -1.0
    _set_header(arrays, header)


@pytest.mark.parametrize("change, words", [
    (_newer, "newer"), (_wrong_dtype, "must be int8"), (_wrong_shape, "must be int32"),
    (_missing, "missing array"), (_bad_scale, "scale")])
def test_damaged_files_are_refused_in_one_line(trained, tmp_path, change, words):
    good = quant.save(trained["qmodel"], tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz", change)
    with pytest.raises(QuantFileError) as error:
        quant.load(bad)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_truncated_missing_and_foreign_files_are_refused(trained, tmp_path):
    good = quant.save(trained["qmodel"], tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    foreign = serialize.save(trained["model"], tmp_path / "float.npz")
    for path, words in [(truncated, "not a readable"), (garbage, "not a readable"),
                        (tmp_path / "absent.npz", "no such"), (foreign, "no header")]:
        with pytest.raises(QuantFileError) as error:
            quant.load(path)
        assert words in str(error.value) and "\n" not in str(error.value), path
    assert zipfile.is_zipfile(good)


@pytest.mark.parametrize("name, words", [
    ("vgg-small", "layer 21 (AdaptiveAvgPool2d)"), ("resnet-small", "(BasicBlock)"),
    ("separable-cnn", "groups=")])
def test_unsupported_layers_are_refused_naming_them(name, words):
    channels = 3 if name != "separable-cnn" else 1
    size = 32 if channels == 3 else 28
    model = models.build(name, channels, 10, image_size=size, rng=0)
    images = np.zeros((2, channels, size, size), np.float32)
    with pytest.raises(QuantizeError) as error:
        quant.quantize(model, images)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_batchnorm_is_folded_and_relu_fused():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 5, rng=rng))
    bn = model[1] if hasattr(model, "__getitem__") else list(model._modules.values())[1]
    bn.running_mean[:] = rng.normal(0, 0.5, 8)
    bn.running_var[:] = rng.uniform(0.5, 2.0, 8)
    bn.weight.data[:] = rng.uniform(0.5, 1.5, 8)
    bn.bias.data[:] = rng.normal(0, 0.2, 8)
    model.eval()
    x = rng.standard_normal((64, 2, 8, 8)).astype(np.float32)
    qmodel = quant.quantize(model, x)
    assert [layer.kind for layer in qmodel.layers] == ["conv", "maxpool", "flatten", "linear"]
    assert qmodel.layers[0].relu and qmodel.layers[0].source == (0, 1, 2)
    assert qmodel.layers[0].output.zero_point == 0            # post-ReLU range starts at 0
    float_out, int8_out = model(x), qmodel(x)
    assert np.abs(float_out - int8_out).max() < 0.05 * np.abs(float_out).max()


def test_behaves_like_an_eval_mode_module(trained):
    qmodel = trained["qmodel"]
    assert qmodel.training is False and qmodel.eval() is qmodel
    assert qmodel.train(False) is qmodel
    with pytest.raises(RuntimeError, match="cannot be trained"):
        qmodel.train()
    with pytest.raises(ValueError, match="expected input"):
        qmodel(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ValueError, match="expected uint8"):
        qmodel.forward_int(np.zeros((2, 1, 28, 28), np.float32))
    assert "conv + relu" in repr(qmodel)
    assert qmodel.layers[0].weight.dtype == np.int8 and qmodel.layers[0].bias.dtype == np.int32


def test_tiny_scales_keep_the_shift_in_range():
    """A channel of near-zero weights gives a tiny requantisation scale; its shift is capped
    so that 31 + shift stays within the int64 arithmetic's 62, and the rounding stays right."""
    from minicnn.quant.arithmetic import QuantParams, requantize
    from minicnn.quant.model import requantize_params

    weight_scale = np.array([1e-3, 1e-14], dtype=np.float32)
    multiplier, shift = requantize_params(QuantParams(0.02, 0, "uint8"), weight_scale,
                                          QuantParams(0.05, 3, "uint8"))
    assert int(shift.max()) <= 31
    acc = np.array([[1000, 2 ** 30]], dtype=np.int32)
    got = requantize(acc, multiplier, shift, 3)
    expected = np.clip(np.round(acc * (0.02 * weight_scale / 0.05)) + 3, 0, 255)
    np.testing.assert_array_equal(got, expected.astype(np.uint8))
