"""The interval level corrected for early stopping's choice of epoch, on
simulated validation and test sides whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpa_ase.training.selection import recorded_epochs, selection_level
from mpa_ase.training.trainer import conformal_fit


def _simulate(rng, epochs: int, n_val: int, n_test: int, shared: float):
    """Per-epoch predictions of a validation and a test side: every epoch's
    errors are a shared part plus an epoch's own noise, so choosing the epoch
    on validation makes its errors there smaller than on test."""
    y_val, y_test = rng.normal(size=n_val), rng.normal(size=n_test)
    base_val, base_test = rng.normal(size=n_val), rng.normal(size=n_test)
    noise_val = rng.normal(size=(epochs, n_val))
    noise_test = rng.normal(size=(epochs, n_test))
    p_val = y_val + shared * base_val + noise_val
    p_test = y_test + shared * base_test + noise_test
    std_val = np.full_like(p_val, 1.0) * rng.uniform(0.8, 1.2, size=(epochs, 1))
    std_test = std_val[:, :1] * np.ones((epochs, n_test))
    return y_val, p_val, std_val, y_test, p_test, std_test


def _test_coverage(y_val, p_val, s_val, y_test, p_test, s_test, quantile_level):
    e = int(np.argmin(np.abs(p_val - y_val).mean(axis=1)))  # early stopping's choice
    q, floor = conformal_fit(y_val, p_val[e], s_val[e], quantile_level)
    return float(np.mean(np.abs(y_test - p_test[e]) <= q * (s_test[e] + floor)))


def test_corrected_level_restores_coverage_that_epoch_choice_took():
    """40 epochs whose validation errors differ by chance: chosen on validation
    and calibrated there, the interval covers well under 90% of test; read at
    the bootstrap's level it covers about 90%. With one epoch there is nothing
    to correct."""
    rng = np.random.default_rng(0)
    plain, corrected, levels = [], [], []
    for _ in range(40):
        sim = _simulate(rng, 40, 60, 400, shared=0.5)
        groups = np.arange(60) // 2  # pairs kept together, as scaffolds are
        sel = selection_level(sim[0], sim[1], sim[2], groups, 0.9, seed=1, replicates=100)
        levels.append(sel["level"])
        assert sel["coverage_at_nominal"] < 0.9
        plain.append(_test_coverage(*sim, 0.9))
        corrected.append(_test_coverage(*sim, sel["level"]))
    assert np.mean(plain) < 0.86  # what the epoch choice does to the plain interval
    assert 0.88 <= np.mean(corrected) <= 0.94
    assert min(levels) > 0.9
    one = _simulate(rng, 1, 200, 10, shared=0.5)
    sel = selection_level(one[0], one[1], one[2], np.arange(200), 0.9, seed=2)
    assert sel["level"] <= 0.915 and sel["coverage_at_nominal"] == pytest.approx(0.9, abs=0.02)


def test_selection_reads_log_errors_for_a_log_target_and_draws_whole_groups():
    """The epoch is chosen on log10 errors for a log target, as training scores
    it: here one epoch is best in log space and another in linear space."""
    y = np.array([1.0, 10.0, 100.0, 1000.0] * 5)
    p_log = y * 1.5  # relative error 50% everywhere
    p_lin = y + np.where(y > 500, 100.0, 2.0 * y)  # small error on the largest only, 3x on the rest
    preds, stds = np.stack([p_log, p_lin]), np.ones((2, len(y)))
    groups = np.repeat(np.arange(5), 4)
    lin = selection_level(y, preds, stds, groups, 0.9, log_target=False, seed=0, replicates=50)
    log = selection_level(y, preds, stds, groups, 0.9, log_target=True, seed=0, replicates=50)
    assert (lin["epoch"], log["epoch"]) == (1, 0)
    with pytest.raises(ValueError, match="needs 5 groups"):
        selection_level(y, preds, stds, np.repeat(np.arange(4), 5), 0.9)
    with pytest.raises(ValueError, match="not finite"):
        selection_level(y, np.where(preds > 999, np.nan, preds), stds, groups, 0.9)
    with pytest.raises(ValueError, match=r"\(epochs, n\)"):
        selection_level(y[:-1], preds, stds, groups, 0.9)
    with pytest.raises(ValueError, match="level must be in"):
        selection_level(y, preds, stds, groups, 1.5)


def test_recorded_epochs_need_every_epoch():
    history = [{"a": {"pred": [1.0, 2.0], "std": [0.1, 0.2]}} for _ in range(3)]
    preds, stds = recorded_epochs(history, "a")
    assert preds.shape == stds.shape == (3, 2)
    assert recorded_epochs(history + [{"b": {"pred": [1.0, 2.0], "std": [0.1, 0.2]}}], "a") is None
    assert recorded_epochs(history, "b") is None
    assert recorded_epochs([], "a") is None
    assert math.isclose(stds[2, 1], 0.2)
