"""Worked solution to tutorial 08's exercise (loaded when MINICNN_TUTORIAL_SOLUTIONS=1)."""

import math


def expected_initial_loss(num_classes):
    """-log(1 / C) = log(C): every class gets probability 1/C, the true one included."""
    return math.log(num_classes)
