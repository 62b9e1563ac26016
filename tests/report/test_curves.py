"""Curve warnings on hand-made metric rows (the shapes they must catch), and none on a healthy curve."""

from __future__ import annotations

import math

from seektune.report.curves import curve_warnings
from seektune.report.svg import line_chart, nice_ticks


def rows(losses, grads=None):
    grads = grads or [1.0] * len(losses)
    return [{"step": i + 1, "loss": l, "grad_norm": g} for i, (l, g) in enumerate(zip(losses, grads))]


def test_healthy_curve_has_no_warning():
    assert curve_warnings(rows([2.5, 2.3, 2.0, 1.9, 1.7, 1.6, 1.5, 1.45, 1.4, 1.38])) == []


def test_nan():
    w = curve_warnings(rows([2.5, 2.3, math.nan, math.nan]))
    assert len(w) == 1 and "loss is nan at step 3 (2 logged steps" in w[0]


def test_spike():
    w = curve_warnings(rows([2.5, 2.4, 2.3, 2.2, 6.0, 2.1, 2.0, 1.9, 1.9, 1.8]))
    assert len(w) == 1 and w[0].startswith("loss spikes (step 5: 6 vs 2.35)")
    g = curve_warnings(rows([2.0] * 3 + [1.9] * 3, grads=[1.0, 1.2, 0.9, 30.0, 1.0, 1.1]))
    assert any(x.startswith("grad norm spikes (step 4: 30") for x in g)


def test_divergence():
    w = curve_warnings(rows([2.0, 1.8, 1.7, 1.9, 2.4, 3.1, 4.0, 5.5, 7.0, 9.0]))
    assert any(x.startswith("loss diverges") for x in w)


def test_flat_loss_suggests_a_higher_learning_rate():
    w = curve_warnings(rows([2.500, 2.501, 2.499, 2.500, 2.498, 2.499, 2.500, 2.497]), learning_rate=2e-6)
    assert w == [w[0]] and "barely moved" in w[0] and "learning rate 2e-06" in w[0]
    assert curve_warnings(rows([2.5, 2.5, 2.5])) == []  # too few steps to judge a trend


def test_chart_breaks_lines_at_nan_and_scales_points():
    svg = line_chart([{"label": "a", "color": "#000", "dash": "", "points": [(1, 1.0), (2, math.nan), (3, 3.0),
                                                                              (4, 2.0)]}], "t", "loss")
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 3
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
