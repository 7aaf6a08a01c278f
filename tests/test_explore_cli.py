"""``minicnn explore`` as a command: it prints its address, ``--port 0`` picks a free port,
Ctrl-C stops it cleanly, another ``--host`` than loopback warns, nonsense is refused."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from minicnn.train import TrainConfig, fit


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore-cli") / "run"
    fit(TrainConfig(dataset="synthetic", model="lenet5", epochs=1, batch_size=32, lr=0.05,
                    limit=200, test_limit=50, val_size=0, seed=2, backend="im2col"),
        out, progress=False, log=None)
    return out


def _default_ctrl_c():
    # A shell starts background jobs with SIGINT ignored, and a child inherits that: Python
    # then installs no KeyboardInterrupt handler, and the Ctrl-C test would wait forever when
    # the suite runs as `pytest &`. Give the server the default, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args, cwd):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "minicnn", "explore", *map(str, args)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_ctrl_c)


def address_of(process, timeout=90.0) -> str:
    """The http://... address from the first line the server prints."""
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline and process.poll() is None:
        line = process.stdout.readline()
        if "http://" in line:
            return line[line.index("http://"):].split()[0]
    raise AssertionError(f"no address printed: {line!r} {process.stderr.read()}")


def test_serves_on_a_free_port_and_stops_cleanly_on_ctrl_c(run_folder, tmp_path):
    process = start([run_folder, "--port", "0", "--no-browser", "--backend", "im2col"],
                    tmp_path)
    try:
        url = address_of(process)
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
        with urllib.request.urlopen(url + "api/info", timeout=30) as response:
            info = json.loads(response.read())
        assert info["run"] == "run" and info["model"] == "lenet5"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"minicnn explore" in response.read()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err and "warning" not in err
    with pytest.raises(OSError):            # the port is closed
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/"))),
                                 timeout=2).close()


def test_another_host_than_loopback_prints_a_warning(run_folder, tmp_path):
    # 127.0.0.2 is still this machine, but not a name the server treats as loopback-only.
    process = start([run_folder, "--port", "0", "--no-browser", "--host", "127.0.0.2",
                     "--backend", "im2col"], tmp_path)
    try:
        url = address_of(process)
        assert url.startswith("http://127.0.0.2:")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "warning: --host 127.0.0.2 lets other machines" in err
    assert process.returncode == 0


@pytest.mark.parametrize("args,code,message", [
    (["--port", "70000"], 2, "a port is 0..65535"),
    (["--port", "http"], 2, "expected a port number"),
])
def test_nonsense_is_refused(run_folder, tmp_path, args, code, message):
    result = subprocess.run([sys.executable, "-m", "minicnn", "explore", str(run_folder),
                             "--no-browser", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == code and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_folder_without_a_run_or_a_busy_port_is_one_line(run_folder, tmp_path, capsys):
    from minicnn.cli import main

    assert main(["explore", str(tmp_path), "--no-browser"]) == 1
    assert "config.json" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["explore", str(run_folder), "--port", str(port), "--no-browser"]) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port 0" in err
    assert len(err.strip().splitlines()) == 1
