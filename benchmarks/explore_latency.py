"""How long ``minicnn explore`` takes to answer a new drawing (the issue asks < 100 ms).

Serves a run folder on a free loopback port, as ``minicnn explore`` does, and times what the
page waits for after each stroke: ``POST /api/analyse`` with a 280x280 canvas PNG, answered with
the preprocessing steps, every layer's output, the probabilities and the saliency of the top
class (server time and the whole HTTP round trip, JSON parsed). Also times the answers to a
hover over a convolution output (``/api/conv``) and to a click on another class
(``/api/saliency``). Drawings are random strokes, different every request, so nothing is
served from a cache::

    minicnn train --model mnist-cnn --epochs 3 --out runs/mnist
    python benchmarks/explore_latency.py runs/mnist                 # default backend
    python benchmarks/explore_latency.py runs/mnist --backend im2col --threads 2 --json out.json

Prints a Markdown table (median, 90th percentile, max in ms).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
import urllib.request

import numpy as np


def canvas_png(rng: np.random.Generator, size: int = 280) -> bytes:
    """A white stroke on black, as the page's pad sends it."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    points = [tuple(rng.uniform(0.2, 0.8, 2) * size) for _ in range(5)]
    ImageDraw.Draw(image).line(points, fill=(255, 255, 255, 255), width=20, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    value = call()
    return (time.perf_counter() - start) * 1000, value


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"median_ms": statistics.median(ordered),
            "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "max_ms": ordered[-1], "n": len(ordered)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder written by `minicnn train`")
    parser.add_argument("--requests", type=int, default=60, help="drawings to time (60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed drawings first (5)")
    parser.add_argument("--backend", choices=("reference", "im2col", "numba"))
    parser.add_argument("--threads", type=int, help="threads for Numba and BLAS")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    from minicnn import kernels
    from minicnn.explore import open_run, start_in_thread

    if args.backend:
        kernels.set_default_backend(args.backend)
    if args.threads:
        from minicnn.kernels.threads import set_num_threads
        set_num_threads(args.threads)
    explorer = open_run(args.run)
    server, _ = start_in_thread(explorer)
    rng = np.random.default_rng(0)
    conv = next(layer["name"] for layer in server.info["layers"] if layer["conv"])
    shape = next(layer["shape"] for layer in server.info["layers"] if layer["conv"])

    def post(data: bytes) -> dict:
        request = urllib.request.Request(server.url + "api/analyse", data=data, method="POST",
                                         headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def get(path: str) -> dict:
        with urllib.request.urlopen(server.url + path) as response:
            return json.loads(response.read())

    for _ in range(args.warmup):
        post(canvas_png(rng))
    rows: dict[str, list[float]] = {"analyse: compute only (in process)": [],
                                    "analyse: HTTP round trip, JSON parsed": [],
                                    "hover a conv output: /api/conv": [],
                                    "another class: /api/saliency": []}
    size = 0
    for i in range(args.requests):
        data, other = canvas_png(rng), canvas_png(rng)
        rows["analyse: compute only (in process)"].append(
            timed(lambda: explorer.analyse(other))[0])
        elapsed, result = timed(lambda: post(data))
        rows["analyse: HTTP round trip, JSON parsed"].append(elapsed)
        size = len(json.dumps(result))
        y, x = int(rng.integers(shape[1])), int(rng.integers(shape[2]))
        rows["hover a conv output: /api/conv"].append(timed(lambda: get(
            f"api/conv?input={result['id']}&layer={conv}&channel=0&y={y}&x={x}"))[0])
        rows["another class: /api/saliency"].append(timed(lambda: get(
            f"api/saliency?input={result['id']}&class={(result['predicted'] + 1) % 10}"))[0])
    server.shutdown()

    results = {name: summary(times) for name, times in rows.items()}
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    context = {"run": str(args.run), "model": explorer.meta.model,
               "backend": kernels.get_default_backend(), "cpu_count": os.cpu_count(),
               "load_average": load, "python": platform.python_version(),
               "response_bytes": size}
    print(f"minicnn explore latency: {explorer.meta.model} ({args.run}), backend "
          f"{context['backend']}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.1f}' for v in load) if load else 'n/a'}; "
          f"analyse answer {size / 1024:.0f} kB\n")
    print("| request | median ms | p90 ms | max ms |\n|---|--:|--:|--:|")
    for name, r in results.items():
        print(f"| {name} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['max_ms']:.1f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"context": context, "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
