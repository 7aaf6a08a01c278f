"""``minicnn export`` and ``minicnn import`` end to end on a small run: the imported run folder
opens in evaluate / predict / explore and computes what the original run computes; bad input
is refused in one line with exit code 1."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from minicnn import nn, serialize  # noqa: E402
from minicnn import onnx as mc_onnx  # noqa: E402
from minicnn.cli import main  # noqa: E402
from minicnn.config import TrainConfig  # noqa: E402
from minicnn.explore import open_run  # noqa: E402
from minicnn.runfolder import load_run  # noqa: E402
from minicnn.train import fit  # noqa: E402


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "run"
    fit(TrainConfig(dataset="synthetic", model="lenet5", epochs=1, batch_size=32, lr=0.05,
                    limit=300, test_limit=100, val_size=0, seed=2, backend="im2col"),
        out, progress=False, log=None)
    return out


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("minicnn: error: ") and "\n" not in err, err
    return err


def test_export_then_import_round_trip(trained_run, tmp_path, capsys):
    onnx_file = tmp_path / "lenet5.onnx"
    assert main(["export", str(trained_run), str(onnx_file)]) == 0
    _, model, meta = load_run(trained_run)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(onnx_file)).metadata_props}
    assert props["minicnn.mean"] == meta.mean and props["minicnn.classes"] == meta.classes

    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    model.eval()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model(x), rtol=1e-5,
                               atol=1e-5 * float(np.abs(model(x)).max()))

    imported = tmp_path / "imported"
    assert main(["import", str(onnx_file), "--out", str(imported), "--dataset", "synthetic"]) == 0
    assert "as lenet5" in capsys.readouterr().out
    config, again, again_meta = load_run(imported)
    assert config.model == "lenet5" and again_meta == meta
    # The same weights, bit for bit (the outputs differ in the last bits only because the
    # trained run's config names the im2col backend and the imported one the default).
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value, err_msg=key)
    assert (imported / "model.onnx").read_bytes() == onnx_file.read_bytes()
    assert json.loads((imported / "imported.json").read_text())["model"] == "lenet5"

    # The imported run is an ordinary run folder for the other commands.
    assert main(["evaluate", str(imported), "--backend", "im2col"]) == 0
    assert "accuracy" in capsys.readouterr().out.lower()
    assert open_run(imported) is not None

    # A second import into the same folder is refused.
    assert main(["import", str(onnx_file), "--out", str(imported), "--dataset",
                 "synthetic"]) == 1
    assert "already holds a run" in error_line(capsys)


def test_train_resume_trains_on_from_the_imported_weights(trained_run, tmp_path, capsys):
    onnx_file = tmp_path / "lenet5.onnx"
    assert main(["export", str(trained_run), str(onnx_file)]) == 0
    imported = tmp_path / "imported"
    assert main(["import", str(onnx_file), "--out", str(imported), "--dataset", "synthetic"]) == 0
    # A small, frozen fine-tune: few images, and a learning rate of 0, so that the weights
    # after the epoch are the ones training started from.
    config = json.loads((imported / "config.json").read_text())
    config.update(limit=96, test_limit=32, batch_size=32, lr=0.0, val_size=0)
    (imported / "config.json").write_text(json.dumps(config))
    # The optimiser's learning rate travels in the checkpoint too (resume restores it).
    checkpoint = serialize.load(imported / "checkpoint.npz")
    assert int(checkpoint["progress.epoch"]) == 0
    checkpoint["optim.group0.lr"] = checkpoint["optim.group0.initial_lr"] = np.array(0.0)
    serialize.save(checkpoint, imported / "checkpoint.npz")
    capsys.readouterr()
    assert main(["train", "--out", str(imported), "--resume", "--no-progress",
                 "--backend", "im2col"]) == 0
    assert "resuming" in capsys.readouterr().out
    _, model, _ = load_run(trained_run)
    _, again, _ = load_run(imported)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value, err_msg=key)
    assert len(json.loads((imported / "history.json").read_text())) == 1


def test_import_of_a_pytorch_network(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    net = tnn.Sequential(tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                         tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                         tnn.Flatten(), tnn.Linear(64 * 7 * 7, 128), tnn.ReLU(),
                         tnn.Linear(128, 10)).eval()
    path = tmp_path / "torch.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(path), dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    out = tmp_path / "run"
    assert main(["import", str(path), "--out", str(out), "--dataset", "synthetic"]) == 0
    assert "as mnist-cnn" in capsys.readouterr().out
    _, model, _ = load_run(out)
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.eval()(x), expected, rtol=1e-4,
                               atol=1e-5 * float(np.abs(expected).max()))


def test_import_refusals_are_one_line(tmp_path, capsys):
    # A graph that is no minicnn model: loads in Python, but makes no run folder.
    odd = tmp_path / "odd.onnx"
    mc_onnx.export(nn.Sequential(nn.Flatten(), nn.Linear(784, 6, rng=0)), odd, (1, 28, 28))
    assert main(["import", str(odd), "--out", str(tmp_path / "a"), "--dataset",
                 "synthetic"]) == 1
    assert "none of minicnn's classification models" in error_line(capsys)
    assert not (tmp_path / "a" / "config.json").exists()

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(odd.read_bytes()[:200])
    assert main(["import", str(truncated), "--out", str(tmp_path / "b"), "--dataset",
                 "synthetic"]) == 1
    assert "truncated.onnx" in error_line(capsys)

    # The wrong image shape for the data set.
    small = tmp_path / "small.onnx"
    mc_onnx.export(nn.Sequential(nn.Flatten(), nn.Linear(16, 6, rng=0)), small, (1, 4, 4))
    assert main(["import", str(small), "--out", str(tmp_path / "c"), "--dataset",
                 "synthetic"]) == 1
    assert "takes input [1, 4, 4]" in error_line(capsys)


def test_export_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.onnx")]) == 1
    error_line(capsys)
    assert not (tmp_path / "x.onnx").exists()
