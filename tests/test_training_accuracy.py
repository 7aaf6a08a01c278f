"""Accuracy floors on real MNIST: training must reach a stated accuracy on the real test split.

How the floor was chosen (issue 8: no accuracy assertion within noise of its threshold)
---------------------------------------------------------------------------------------
The configuration below (mnist-cnn, one epoch on the first 10,000 training images, batch 64,
SGD lr 0.05 momentum 0.9, per-epoch cosine schedule, no weight decay, no augmentation, no
validation split) is written out in full rather than taken from ``TrainConfig``'s defaults,
so that a new default recipe cannot silently move it off these measurements. It was
trained with seeds 0-4,
1 and 2 BLAS/Numba threads, ``OPENBLAS_CORETYPE`` unset / Haswell / Sandybridge / Prescott,
the numba and im2col backends, and both momentum policies the code has had (Nesterov, as at
commit 63fa7d2, and plain momentum). Test accuracy on the 10,000 real test images (AMD EPYC,
2 cores, numpy 2.4 / OpenBLAS; every row is one run):

=============================  ========================================  ===============
momentum, backend, coretype    seeds 0, 1, 2, 3, 4 (unset: 1 and 2       min .. max
                               threads gave identical values)
=============================  ========================================  ===============
Nesterov, numba, unset         .9701 .9574 .9678 .9574 .9601             .9574 .. .9701
Nesterov, numba, Haswell 2 thr .9698 .9634 .9677 (seeds 0-2)             .9634 .. .9698
Nesterov, numba, Haswell 1 thr .9664 (seed 0)
plain, numba, unset            .9586 .9601 .9571 .9640 .9506             .9506 .. .9640
plain, numba, Haswell 2 thr    .9586 .9601 .9571 .9597 .9503             .9503 .. .9601
plain, numba, Haswell 1 thr    .9578 .9601 .9575 .9637 .9551             .9551 .. .9637
plain, numba, Sandybridge 2 t  .9581 .9624 .9555 .9634 .9448             .9448 .. .9634
plain, numba, Prescott 1 thr   .9583 .9601 .9571 (seeds 0-2)             .9571 .. .9601
plain, im2col, Haswell 2 thr   .9586 .9601 .9571 .9597 .9503 (= numba)   .9503 .. .9601
=============================  ========================================  ===============

(Seed 0 with Nesterov gives .9698 under Haswell and .9664 under Haswell with one thread:
exactly the two failures on record, so those came from ``OPENBLAS_CORETYPE=Haswell``.)
Over the 32 distinct runs: min .9448, max .9701, mean .9597, standard deviation .0055
(plain momentum alone: 23 runs, .9448 .. .9640, mean .9578, sd .0045). The test runs the
plain-momentum rows (``nesterov=False``; seed 0 re-checked at commit c9aa40a: .9586). For
comparison, the default recipe of c9aa40a (per-batch warm-up + cosine) gave .9655 .9675
.9664 .9625 .9643 for seeds 0-4 (Haswell, 2 threads).

So one seed's accuracy moves by about a point with nothing but the BLAS kernel (seed 0:
.9578 .. .9701; another kernel's round-off sends training down another path), and across
seeds it spans .9448 .. .9701 (standard deviation about 0.005). The old floor, 0.97, sat at
the very top of that range: it failed on another machine at 0.9698 (0.9664 with one thread).
A fixed seed on an unknown machine is one draw from that whole spread, so the floor is set
below all of it: **0.93**, i.e. 1.5 points (about 3 standard deviations) under the lowest
run observed and 3 points (6 sd) under the mean. It still fails a broken training: with
ReLU's backward ignoring its mask, training diverges at batch 26 (``TrainingError``). It is
a coarse check by nature -- dropping momentum altogether still reaches .9325 -- so the
optimiser's arithmetic is pinned down by the parity tests against PyTorch, not here.
"""

import pytest

from minicnn.data import DataError, load_dataset
from minicnn.train import TrainConfig, fit

#: See the module docstring for the measurements behind this number.
ACCURACY_FLOOR = 0.93


@pytest.mark.slow
def test_one_epoch_on_10k_real_mnist_clears_the_measured_floor(tmp_path):
    try:
        load_dataset("mnist", "test", download=False, limit=1)
    except DataError as error:
        pytest.skip(f"real MNIST not available (set MINICNN_DATA_DIR): {error}")
    config = TrainConfig(dataset="mnist", model="mnist-cnn", epochs=1, limit=10_000,
                         val_size=0, seed=0, batch_size=64, optimizer="sgd", lr=0.05,
                         momentum=0.9, nesterov=False, weight_decay=0.0, schedule="cosine",
                         augment=False)
    result = fit(config, tmp_path / "mnist", progress=False, log=None)
    assert result["test_accuracy"] >= ACCURACY_FLOOR, result["test_accuracy"]
