"""Figures that a learner reads: what they colour and on which scale."""

import numpy as np

from minicnn import viz


def test_confusion_colours_only_the_mistakes():
    confusion = np.array([[980, 0, 2], [3, 1100, 9], [5, 1, 990]])
    fig = viz.plot_confusion(confusion, ["0", "1", "2"])
    shown = fig.axes[0].images[0]
    data = shown.get_array()
    assert np.array_equal(np.ma.getmaskarray(data), np.eye(3, dtype=bool))   # diagonal: no colour
    assert shown.get_clim() == (0, 9)                   # the scale ends at the largest mistake
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == [str(v) for v in confusion.ravel()]  # every count is still written


def test_gray_filters_share_one_scale_around_zero():
    weight = np.random.default_rng(0).standard_normal((6, 1, 5, 5))
    weight[0] *= 3
    fig = viz.plot_filters(weight)
    limits = {image.get_clim() for ax in fig.axes for image in ax.images}
    limit = np.abs(weight).max()
    assert limits == {(-limit, limit)}


def test_rgb_filters_are_drawn_as_colour():
    fig = viz.plot_filters(np.random.default_rng(0).standard_normal((4, 3, 3, 3)))
    assert all(image.get_array().shape == (3, 3, 3) for ax in fig.axes for image in ax.images)
