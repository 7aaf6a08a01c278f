"""``minicnn quantize`` and ``--int8`` on evaluate, predict and export, end to end on a small
run; ONNX Runtime runs the exported QDQ graph and agrees with the QuantizedModel; a run
without an int8 model, or with one from a newer format, is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from minicnn import quant
from minicnn.cli import main
from minicnn.config import TrainConfig
from minicnn.data import load_dataset
from minicnn.train import fit


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quant_cli") / "run"
    fit(TrainConfig(dataset="synthetic", model="lenet5", epochs=1, batch_size=32, lr=0.05,
                    limit=600, test_limit=200, val_size=0, seed=3),
        out, progress=False, log=None)
    return out


@pytest.fixture(scope="module")
def quantized(run):
    assert main(["quantize", str(run), "--calibration-images", "128"]) == 0
    return run


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("minicnn: error: ") and "\n" not in err, err
    return err


def test_quantize_prints_accuracies_sizes_and_where(run, capsys):
    assert main(["quantize", str(run), "--method", "percentile", "--calibration-images",
                 "64", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "calibrated on 64 training images (percentile)" in out
    assert "float" in out and "int8" in out and "smaller" in out
    assert str(run / "model.int8.npz") in out
    info = json.loads((run / "quantized.json").read_text())
    assert info["method"] == "percentile" and info["calibration_images"] == 64
    assert 0 <= info["int8_accuracy"] <= 1 and info["float_size"] > 3.5 * info["int8_size"]


def test_evaluate_and_predict_with_int8(quantized, tmp_path, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(quantized), "--int8"]) == 0
    out = capsys.readouterr().out
    assert "int8 model" in out and "accuracy" in out
    test = load_dataset("synthetic", "test", limit=3, seed=3)
    paths = []
    for i, image in enumerate(test.images):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image[0]).save(path)
        paths.append(str(path))
    assert main(["predict", str(quantized), "--int8", "--json", "--no-preprocess", *paths]) == 0
    int8 = json.loads(capsys.readouterr().out)
    assert main(["predict", str(quantized), "--json", "--no-preprocess", *paths]) == 0
    floats = json.loads(capsys.readouterr().out)
    assert len(int8) == 3
    for a, b in zip(int8, floats):
        assert a["top"][0]["label"] == b["top"][0]["label"]
        assert abs(a["top"][0]["probability"] - b["top"][0]["probability"]) < 0.1


def test_export_int8_runs_in_onnx_runtime(quantized, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "int8.onnx"
    assert main(["export", str(quantized), str(out), "--int8"]) == 0
    assert str(out) in capsys.readouterr().out
    proto = onnx.load(str(out))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert "minicnn.mean" in props and "minicnn.quantization" in props
    _, qmodel, meta = quant.load_run_int8(quantized)
    test = load_dataset("synthetic", "test", limit=200, seed=3)
    x = ((test.images.astype(np.float32) / 255 - meta.mean[0]) / meta.std[0])
    ours = qmodel(x)
    spread = float(np.abs(ours).max())
    # Graph optimisations off: ONNX Runtime runs the QDQ graph as written (quantize,
    # dequantize, float Conv/Gemm), which computes minicnn's integers up to rounding ties.
    exact = ort.SessionOptions()
    exact.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    emulated = ort.InferenceSession(str(out), exact, providers=["CPUExecutionProvider"])
    theirs = emulated.run(None, {"input": x})[0]
    assert theirs.shape == ours.shape
    assert (theirs.argmax(1) == ours.argmax(1)).mean() >= 0.99
    assert np.median(np.abs(theirs - ours)) < 1e-3 * spread
    assert np.abs(theirs - ours).max() < 0.1 * spread
    # Default: its fused integer kernels (QLinearConv...). On AVX2 without VNNI they multiply
    # uint8 by int8 in 16-bit pairs that can saturate, so they drift further from the exact
    # integers (on trained MNIST nets classes still agree on 99.8 % of test images).
    fused = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    theirs = fused.run(None, {"input": x})[0]
    assert (theirs.argmax(1) == ours.argmax(1)).mean() >= 0.9


def test_commands_refuse_a_run_without_an_int8_model(run, tmp_path, capsys):
    (run / "model.int8.npz").unlink(missing_ok=True)
    for argv in (["evaluate", str(run), "--int8"],
                 ["predict", str(run), "--int8", str(tmp_path / "x.png")],
                 ["export", str(run), str(tmp_path / "x.onnx"), "--int8"]):
        if argv[0] == "export":
            pytest.importorskip("onnx")
        assert main(argv) == 1, argv
        assert "minicnn quantize" in error_line(capsys)


@pytest.mark.parametrize("version, words", [(99, "newer"), (0, "version")])
def test_other_format_versions_are_refused(run, capsys, version, words):
    assert main(["quantize", str(run), "--calibration-images", "32"]) == 0
    path = run / "model.int8.npz"
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header["version"] = version
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--int8"]) == 1
    assert words in error_line(capsys)


def test_bad_arguments_are_usage_errors(run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", str(run), "--method", "magic"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", str(run), "--calibration-images", "0"])
    assert exit_info.value.code == 2
