"""Each library alone in its own process: model steps and whole training epochs.

Timing minicnn and PyTorch inside one process lets each library's idle worker threads slow the
other down (PyTorch's OpenMP workers spin after every parallel region, OpenBLAS's after every
GEMM). A user runs one library, so by default the harness times each competitor in a fresh
Python process of its own and only collects the numbers:

- **model steps** (:func:`bench_models`): one process per (competitor, model, batch, thread
  count) builds its model, warms up, times ``repeats`` training steps and then ``repeats``
  inference batches, and reports the median of each. Processes alternate between the
  competitors (round ``r`` runs minicnn, torch, torch-cl, ... rotated by ``r``), ``processes``
  rounds in all; the harness reports the median over a competitor's processes and the ratio of
  medians minicnn / PyTorch.
- **epochs** (:func:`bench_epoch`): one process runs ``minicnn train``'s own code path
  (:func:`minicnn.train.fit` with the configuration ``minicnn train --model M --epochs 1``
  builds), another a plain PyTorch script with the same model, weights, recipe, data split,
  per-epoch shuffle and normalisation; each reports the epoch's wall time and the time spent
  in training steps alone.

A child is ``python -m minicnn.bench.process JOB`` (``JOB`` is JSON); it prints one line
``minicnn-bench-result: {...}`` with its timings and the record of where it ran: machine (CPU
model, AVX2/AVX-512 flags), thread counts in effect, library versions, BLAS core kernel
(threadpoolctl's ``architecture``), ``OPENBLAS_*``/``MALLOC_*`` variables, its own GEMM peak.
The child's environment is the harness's, except that ``blas_native`` removes
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` (in the child only) so that OpenBLAS picks the
machine's own kernels, and that PyTorch's children get ``MINICNN_ALLOCATOR=system``: they
import minicnn only for the harness, and a PyTorch user's process does not get the allocator
thresholds minicnn sets on import (:mod:`minicnn.allocator`). Each child records what was set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .agreement import BenchError, compare_all
from .suites import ModelCase
from .timing import summarize

RESULT_MARK = "minicnn-bench-result: "
#: Variables ``--blas-native`` removes from the children's environment.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: The PyTorch competitors: NCHW (minicnn's layout) and channels-last (NHWC).
TORCH_COMPETITORS = ("torch", "torch-cl")
STEP_TIMEOUT_S = 900.0
EPOCH_TIMEOUT_S = 3600.0


# ------------------------------------------------------------------------------------------------
# Parent side: environment, launching
# ------------------------------------------------------------------------------------------------
def child_environment(blas_native: bool, base=None, competitor: str | None = None) -> dict:
    """The environment of a child process: a copy of ``base`` (default ``os.environ``),
    without :data:`BLAS_ENV` when ``blas_native``, and with ``MINICNN_ALLOCATOR=system`` for
    a PyTorch ``competitor`` (see the module docstring). ``base`` itself is never changed."""
    from ..allocator import ENV_VAR

    env = dict(os.environ if base is None else base)
    if blas_native:
        for name in BLAS_ENV:
            env.pop(name, None)
    if competitor in TORCH_COMPETITORS:
        env[ENV_VAR] = "system"
    return env


def run_child(job: dict, env: dict, timeout: float) -> dict:
    """Run one child process for ``job`` and return the record it printed.

    Raises
    ------
    BenchError
        When the child fails, times out or prints no result (the message has its last
        error line).
    """
    command = [sys.executable, "-m", "minicnn.bench.process", json.dumps(job)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"benchmark process {_label(job)} took more than {timeout:.0f} s") \
            from error
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
        tail = errors[-1] if errors else f"exit status {done.returncode}, no output"
        raise BenchError(f"benchmark process {_label(job)} failed: {tail}")
    record = json.loads(lines[-1][len(RESULT_MARK):])
    record["process_wall_s"] = wall
    return record


def _label(job: dict) -> str:
    return (f"{job['kind']} {job['competitor']} {job['model']} batch {job['batch']} "
            f"{job['threads']} thread(s)")


def _rotate(items: list, shift: int) -> list:
    shift %= len(items)
    return items[shift:] + items[:shift]


def _round(cases, thread_counts, names, round_index: int):
    """One round of child processes: ``(case, threads, competitor)`` for every case and
    thread count, the competitors in turn and starting one further on each round, so that
    no library always runs first (or right after another)."""
    for case in cases:
        for threads in thread_counts:
            for name in _rotate(list(names), round_index):
                yield case, threads, name


def step_competitors(backends) -> list[str]:
    """The process-mode competitors for ``backends``: the minicnn backends asked for (the
    default backend when none), then ``torch`` and ``torch-cl`` when ``torch`` is asked."""
    from .models import competitors

    names = competitors(backends)
    if "torch" in names:
        names.append("torch-cl")
    return names


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


# ------------------------------------------------------------------------------------------------
# Parent side: model steps
# ------------------------------------------------------------------------------------------------
def bench_models(cases, backends, thread_counts, processes: int, repeats: int, warmup: int,
                 blas_native: bool = False, log=None) -> dict:
    """Time training steps and inference of every case, each competitor alone in its own
    process, at every thread count.

    Returns
    -------
    dict
        ``records`` (one per model, batch, mode, thread count and competitor; ``step`` is the
        summary of the processes' medians, ``processes`` each process's own summary),
        ``scaling`` (time at 1 thread / time at N threads), ``runs`` (every child's record of
        where it ran, without its timings) and ``peaks`` (the children's GEMM peaks).

    Raises
    ------
    AgreementError
        If a competitor's logits (eval mode, same weights and batch) differ from the first's.
    """
    from .models import MODES, model_flops, make_inputs

    say = log or (lambda line: None)
    names = step_competitors(backends)
    results: dict[tuple, list[dict]] = {}
    for round_index in range(processes):
        for case, threads, name in _round(cases, thread_counts, names, round_index):
            env = child_environment(blas_native, competitor=name)
            job = {"kind": "steps", "competitor": name, "model": case.model,
                   "batch": case.batch, "in_channels": case.in_channels,
                   "image_size": case.image_size, "num_classes": case.num_classes,
                   "threads": threads, "repeats": repeats, "warmup": warmup,
                   "logits": round_index == 0}
            record = run_child(job, env, STEP_TIMEOUT_S)
            results.setdefault((case, threads, name), []).append(record)
            say(f"  process {round_index + 1}/{processes} {case.name:<10} batch "
                f"{case.batch:<4} {threads} thr {name:<9} train "
                f"{record['modes']['train']['median_ms']:8.2f} ms  inference "
                f"{record['modes']['inference']['median_ms']:8.2f} ms  "
                f"(pid {record['pid']}, {record['process_wall_s']:.1f} s)")
        if round_index == 0:
            for case in cases:
                outputs = {name: {"logits": np.asarray(results[(case, thread_counts[0], name)]
                                                       [0]["logits"], dtype=np.float32)}
                           for name in names}
                compare_all(f"model {case.name} (batch {case.batch}, eval-mode logits, "
                            "separate processes)", outputs)

    every = [r for runs in results.values() for r in runs]
    core_peak = _median(r["gemm_peak"]["core_gflops"] for r in every)
    peaks = {threads: _median(r["gemm_peak"]["gflops"] for r in every
                              if r["threads_requested"] == threads)
             for threads in thread_counts}

    records = []
    for case in cases:
        _, _, template = make_inputs(case)
        flops = model_flops(template, case)
        for mode in MODES:
            for threads in thread_counts:
                steps = {name: summarize([r["modes"][mode]["median_ms"] / 1e3
                                          for r in results[(case, threads, name)]])
                         for name in names}
                for name in names:
                    step = steps[name]
                    mode_flops = flops["train" if mode == "train" else "inference"]
                    gflops = mode_flops / step.median / 1e9
                    records.append({
                        "name": case.name, "batch": case.batch, "mode": mode,
                        "backend": name, "threads": threads,
                        "library": "torch" if name in TORCH_COMPETITORS else "minicnn",
                        "layout": "NHWC (channels_last)" if name == "torch-cl" else "NCHW",
                        "step": step.to_dict(),
                        "processes": [r["modes"][mode] for r in results[(case, threads, name)]],
                        "images_per_s": case.batch / step.median,
                        "flops": mode_flops, "gflops": gflops,
                        "fraction_of_peak": gflops / peaks[threads] if peaks[threads] else None,
                        "fraction_of_core_peak": (gflops / (threads * core_peak)
                                                  if core_peak else None),
                        "ratio_to_torch": (step.median / steps["torch"].median
                                           if "torch" in steps else None),
                        "ratio_to_torch_cl": (step.median / steps["torch-cl"].median
                                              if "torch-cl" in steps else None),
                    })
    runs = [{k: v for k, v in r.items() if k not in ("modes", "logits")} for r in every]
    return {"records": records, "scaling": thread_scaling(records), "runs": runs,
            "peaks": {"core_gflops": core_peak,
                      "gflops_by_threads": {str(t): p for t, p in peaks.items()}}}


def thread_scaling(records: list[dict]) -> list[dict]:
    """Per model, batch, mode and competitor: time at 1 thread / time at each larger thread
    count (the speed-up the extra threads give; 2.0 would be perfect on 2 cores)."""
    by_key = {(r["name"], r["batch"], r["mode"], r["backend"], r["threads"]): r
              for r in records}
    scaling = []
    for (name, batch, mode, backend, threads), record in by_key.items():
        single = by_key.get((name, batch, mode, backend, 1))
        if threads == 1 or single is None:
            continue
        scaling.append({"name": name, "batch": batch, "mode": mode, "backend": backend,
                        "threads": threads,
                        "time_1_thread_ms": single["step"]["median_ms"],
                        "time_ms": record["step"]["median_ms"],
                        "speedup": single["step"]["median_ms"] / record["step"]["median_ms"]})
    return scaling


# ------------------------------------------------------------------------------------------------
# Parent side: epochs
# ------------------------------------------------------------------------------------------------
def bench_epoch(cases, backends, thread_counts, processes: int, warmup: int,
                dataset: str = "mnist", limit: int | None = None, data_dir: str | None = None,
                blas_native: bool = False, log=None) -> dict:
    """One training epoch per process: ``minicnn train`` against a plain PyTorch script
    (NCHW and channels-last), alternating, ``processes`` of each.

    Returns
    -------
    dict
        ``records`` (one per model, thread count and competitor: ``epoch`` and ``steps``
        summarise the processes' epoch wall times and steps-only times, in ms; ratios are of
        medians) and ``runs`` (every child's record of where it ran).
    """
    say = log or (lambda line: None)
    names = step_competitors(backends)
    results: dict[tuple, list[dict]] = {}
    for round_index in range(processes):
        for case, threads, name in _round(cases, thread_counts, names, round_index):
            env = child_environment(blas_native, competitor=name)
            job = {"kind": "epoch", "competitor": name, "model": case.model,
                   "batch": case.batch, "threads": threads, "warmup": warmup,
                   "dataset": dataset, "limit": limit, "data_dir": data_dir}
            record = run_child(job, env, EPOCH_TIMEOUT_S)
            results.setdefault((case, threads, name), []).append(record)
            steps = record["steps_s"]
            say(f"  process {round_index + 1}/{processes} epoch {case.name} "
                f"{threads} thr {name:<9} {record['epoch_s']:8.2f} s epoch, "
                + (f"{steps:8.2f} s in steps" if steps is not None else "steps n/a")
                + f", test accuracy {record['test_accuracy']:.4f}")

    records = []
    for case in cases:
        for threads in thread_counts:
            epochs = {n: summarize([r["epoch_s"] for r in results[(case, threads, n)]])
                      for n in names}
            steps = {}
            for n in names:
                values = [r["steps_s"] for r in results[(case, threads, n)]]
                steps[n] = summarize(values) if None not in values else None
            for n in names:
                runs = results[(case, threads, n)]
                epoch, step = epochs[n], steps[n]

                def ratio(other, table):
                    mine, theirs = table.get(n), table.get(other)
                    return mine.median / theirs.median if mine and theirs else None

                records.append({
                    "name": case.name, "batch": case.batch, "threads": threads, "backend": n,
                    "library": "torch" if n in TORCH_COMPETITORS else "minicnn",
                    "layout": "NHWC (channels_last)" if n == "torch-cl" else "NCHW",
                    "dataset": dataset, "train_images": runs[0]["train_images"],
                    "steps_per_epoch": runs[0]["steps"],
                    "epoch": epoch.to_dict(), "steps": step.to_dict() if step else None,
                    "loop_overhead": (epoch.median / step.median - 1) if step else None,
                    "ratio_to_torch": ratio("torch", epochs),
                    "ratio_to_torch_cl": ratio("torch-cl", epochs),
                    "steps_ratio_to_torch": ratio("torch", steps),
                    "steps_ratio_to_torch_cl": ratio("torch-cl", steps),
                    "test_accuracy": [r["test_accuracy"] for r in runs],
                    "val_accuracy": [r.get("val_accuracy") for r in runs],
                    "processes": [{k: r[k] for k in ("epoch_s", "steps_s", "warmup_s",
                                                     "process_wall_s", "pid")} for r in runs],
                })
    every = [r for runs in results.values() for r in runs]
    return {"records": records, "runs": [dict(r) for r in every]}


# ------------------------------------------------------------------------------------------------
# Child side
# ------------------------------------------------------------------------------------------------
def _set_threads(threads: int, with_torch: bool) -> None:
    """Import PyTorch first when this process uses it (so that its pool is set too), then
    set Numba's, BLAS's and PyTorch's thread counts together."""
    if with_torch:
        import torch  # noqa: F401
    from ..kernels.threads import set_num_threads

    set_num_threads(threads)


def _where(job: dict, started: float) -> dict:
    """What a child records about itself besides its timings."""
    from .. import allocator
    from . import machine

    return {"kind": job["kind"], "competitor": job["competitor"], "model": job["model"],
            "batch": job["batch"], "threads_requested": job["threads"], "pid": os.getpid(),
            "machine": machine.describe_machine(), "versions": machine.describe_versions(),
            "blas": machine.describe_blas(), "threads": machine.describe_threads(job["threads"]),
            "torch": machine.describe_torch(), "environment": machine.describe_environment(),
            "allocator": allocator.status(),
            "load_average": machine.load_average(),
            "child_wall_s": time.perf_counter() - started}


def _gemm_peaks() -> dict:
    """This process's NumPy GEMM rate at its thread count and at one thread (short runs)."""
    from . import machine

    peak = machine.measure_gemm_peak(repeats=3, warmup=1, with_torch=False)
    core = machine.measure_core_peak(repeats=3, warmup=1)
    return {"gflops": peak["gflops"], "core_gflops": core["gflops"], "size": peak["size"]}


def child_steps(job: dict) -> dict:
    """Time ``repeats`` training steps and inference batches of one competitor."""
    from .models import MODES, MinicnnModel, TorchModel, make_inputs
    from .timing import time_blocks

    started = time.perf_counter()
    name = job["competitor"]
    is_torch = name in TORCH_COMPETITORS
    _set_threads(job["threads"], is_torch)
    case = ModelCase(job["model"], job["batch"], job["in_channels"], job["image_size"],
                     job["num_classes"])
    x, labels, template = make_inputs(case)
    state = template.state_dict()

    def build():
        if is_torch:
            return TorchModel(template, x, labels, channels_last=name == "torch-cl")
        return MinicnnModel(case, name, state, x, labels)

    result = {"modes": {}, "logits": None}
    if job.get("logits"):
        competitor = build()
        competitor.model.eval()
        logits = competitor.inference()
        logits = logits.detach().numpy() if is_torch else logits
        result["logits"] = np.asarray(logits, dtype=np.float64).tolist()
        del competitor
    for mode in MODES:
        competitor = build()
        if mode == "inference":
            competitor.model.eval()
            function = competitor.inference
        else:
            function = competitor.train_step
        stats = time_blocks({name: function}, job["repeats"], job["warmup"])[name]
        result["modes"][mode] = stats.to_dict()
        del competitor, function
    result["gemm_peak"] = _gemm_peaks()
    result.update(_where(job, started))
    return result


def _train_config(job: dict):
    """The :class:`~minicnn.config.TrainConfig` that ``minicnn train --model M --epochs 1
    --batch-size B --dataset D [--limit N] [--data-dir DIR]`` runs (the command's recipe,
    :func:`minicnn.config.recipe_config`); with a limit, the test set is limited to as many
    images (evaluation is not timed)."""
    from ..config import recipe_config

    backend = None if job["competitor"] in TORCH_COMPETITORS else job["competitor"]
    return recipe_config(model=job["model"], dataset=job["dataset"], epochs=1,
                         batch_size=job["batch"], limit=job.get("limit"),
                         test_limit=job.get("limit"), data_dir=job.get("data_dir"),
                         backend=backend)


def _warm_up(job: dict, config, shape, classes: int) -> float:
    """``warmup`` untimed training steps on a throwaway model of the same kind, so that
    neither library's epoch includes one-off start-up (Numba loading its compiled kernels,
    oneDNN creating its primitives). Returns the seconds spent."""
    from .models import MinicnnModel, TorchModel

    if job["warmup"] <= 0:
        return 0.0
    start = time.perf_counter()
    channels, size, _ = shape
    case = ModelCase(config.model, config.batch_size, channels, size, classes)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((config.batch_size, channels, size, size), dtype=np.float32)
    labels = rng.integers(0, classes, config.batch_size)
    from .. import models as zoo

    template = zoo.build(config.model, channels, classes, image_size=size, rng=0)
    if job["competitor"] in TORCH_COMPETITORS:
        competitor = TorchModel(template, x, labels,
                                channels_last=job["competitor"] == "torch-cl")
    else:
        competitor = MinicnnModel(case, job["competitor"], template.state_dict(), x, labels)
    for _ in range(job["warmup"]):
        competitor.train_step()
    return time.perf_counter() - start


def child_epoch_minicnn(job: dict) -> dict:
    """One epoch of ``minicnn train`` (:func:`minicnn.train.fit`, progress bar on, as the
    command runs it), its steps timed by the loop's own per-step clock."""
    from .. import train

    started = time.perf_counter()
    _set_threads(job["threads"], False)
    config = _train_config(job)
    data = train.load_data(config)
    train_full, train_set = data.train_full, data.train_set
    warmup_s = _warm_up(job, config, train_full.images.shape[1:], len(train_full.classes))

    with tempfile.TemporaryDirectory(prefix="minicnn-bench-epoch-") as out:
        result = train.fit(config, out, progress=True,
                           log=lambda *a: print(*a, file=sys.stderr))
    history = result["history"][-1]
    steps = len(train_set) // config.batch_size
    steps_s = history["step_seconds"]          # the loop's own clock, forward to optimiser step
    out = {"epoch_s": history["seconds"], "steps_s": steps_s, "steps": steps,
           "train_images": len(train_set), "warmup_s": warmup_s,
           "test_accuracy": result["test_accuracy"],
           "val_accuracy": history.get("val_accuracy"), "train_loss": history["train_loss"],
           "recipe": _recipe(config)}
    out.update(_where(job, started))
    return out


def _recipe(config) -> dict:
    return {k: getattr(config, k) for k in ("optimizer", "lr", "momentum", "nesterov",
                                            "weight_decay", "schedule", "step_size", "gamma",
                                            "batch_size", "seed", "epochs", "limit",
                                            "val_size")}


def child_epoch_torch(job: dict) -> dict:
    """One epoch of a plain PyTorch training script: the same data split, batches (minicnn's
    own loader: the same order, augmentation and normalisation as ``minicnn train``), model
    and initial weights, optimiser, and learning rate at every step as ``minicnn train``."""
    import torch

    from .. import train
    from ..data import DataLoader, default_transform
    from .models import torch_twin

    started = time.perf_counter()
    _set_threads(job["threads"], True)
    config = _train_config(job)
    data = train.load_data(config)
    train_full, train_set, val_set, test_set = (data.train_full, data.train_set, data.val_set,
                                                data.test_set)
    warmup_s = _warm_up(job, config, train_full.images.shape[1:], len(train_full.classes))
    channels_last = job["competitor"] == "torch-cl"
    meta = train.RunMeta.from_dataset(config, train_full)
    template = train.build_model(config, meta)
    model = torch_twin(template)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    name = config.optimizer.lower()
    if name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.nesterov)
    elif name == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
    else:
        raise BenchError(f"the PyTorch epoch script has no optimizer {config.optimizer!r}")
    # The learning rate at every step comes from minicnn's own schedule (stepped as ``fit``
    # steps it), so the two runs follow the same recipe whatever the schedule is.
    steps = len(train_set) // config.batch_size                 # the loader drops the rest
    rates = train.make_optimizer(config, template.parameters())
    schedule = train.make_schedule(config, rates, steps)
    per_step = schedule is not None and train.SCHEDULES[config.schedule]
    augment = config.augment if config.augment is not None else train_set.images.shape[1] == 3
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                        transform=default_transform(train_full, augment=augment),
                        rng=np.random.default_rng((config.seed, 0)))
    eval_transform = default_transform(train_full, augment=False)

    def to_torch(x):
        x = torch.from_numpy(x)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def batch(images, index):
        return to_torch(eval_transform(images[index].astype(np.float32) / np.float32(255.0),
                                       None))

    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    epoch_start = time.perf_counter()
    steps_s = loss_sum = correct = seen = 0.0
    for images, labels in loader:
        for group in optimizer.param_groups:
            group["lr"] = rates.lr
        x, y = to_torch(images), torch.from_numpy(labels)
        step_start = time.perf_counter()
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps_s += time.perf_counter() - step_start
        if per_step:
            schedule.step()
        loss_sum += loss.item() * len(labels)
        correct += float((logits.argmax(dim=1) == y).sum())
        seen += len(labels)
    epoch_s = time.perf_counter() - epoch_start

    def accuracy(dataset) -> float | None:
        if dataset is None:
            return None
        model.eval()
        hits = 0
        with torch.inference_mode():
            for first in range(0, len(dataset), 256):
                index = np.arange(first, min(first + 256, len(dataset)))
                hits += int((model(batch(dataset.images, index)).argmax(dim=1).numpy()
                             == dataset.labels[index]).sum())
        return hits / len(dataset)

    out = {"epoch_s": epoch_s, "steps_s": steps_s, "steps": steps,
           "train_images": len(train_set), "warmup_s": warmup_s,
           "test_accuracy": accuracy(test_set), "val_accuracy": accuracy(val_set),
           "train_loss": loss_sum / max(seen, 1), "recipe": _recipe(config)}
    out.update(_where(job, started))
    return out


def child_main(argv: list[str]) -> int:
    """``python -m minicnn.bench.process JOB``: run the job, print one result line."""
    if len(argv) != 1:
        print("usage: python -m minicnn.bench.process JOB_JSON", file=sys.stderr)
        return 2
    job = json.loads(argv[0])
    if job["kind"] == "steps":
        result = child_steps(job)
    elif job["kind"] == "epoch":
        result = (child_epoch_torch if job["competitor"] in TORCH_COMPETITORS
                  else child_epoch_minicnn)(job)
    else:
        print(f"unknown job kind {job['kind']!r}", file=sys.stderr)
        return 2
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
