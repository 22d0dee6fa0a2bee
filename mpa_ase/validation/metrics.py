"""Metrics beyond MAE for judging property models, in and out of distribution.

- ``regression_metrics``: MAE, RMSE, R².
- ``extrapolative_precision``: of the test materials predicted to lie beyond the
  training range's top quantile, the fraction that truly does (discovery hit rate).
- ``ood_recall``: of the truly extreme test materials, the fraction the model ranks
  as extreme.
- ``kde_overlap``: overlap (0..1) of the train and test target distributions
  (Gaussian KDE); low overlap marks an out-of-distribution split.
- ``miscalibration_area`` and ``spearman_error_vs_std``: whether predicted σ
  are calibrated and rank the errors.
"""

from __future__ import annotations

import numpy as np

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz


def regression_metrics(y, pred) -> dict:
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    err = pred - y
    ss = float(np.sum((y - y.mean()) ** 2))
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "r2": float(1 - np.sum(err ** 2) / ss) if ss > 0 else float("nan"), "n": int(len(y))}


def extrapolative_precision(y_train, y_test, pred_test, quantile: float = 0.9) -> float:
    """Precision of calling "above the training set's ``quantile``" on the test set."""
    threshold = np.quantile(np.asarray(y_train, float), quantile)
    called = np.asarray(pred_test) > threshold
    if not called.any():
        return 0.0
    return float(np.mean(np.asarray(y_test)[called] > threshold))


def ood_recall(y_test, pred_test, top_fraction: float = 0.1) -> float:
    """Of the top ``top_fraction`` true test values, the share among the top predicted ones."""
    y, p = np.asarray(y_test, float), np.asarray(pred_test, float)
    k = max(1, int(round(top_fraction * len(y))))
    true_top = set(np.argsort(-y)[:k])
    pred_top = set(np.argsort(-p)[:k])
    return len(true_top & pred_top) / k


def kde_overlap(a, b, grid: int = 512) -> float:
    """Overlap coefficient ∫ min(p_a, p_b) of two 1-D samples' Gaussian KDEs."""
    from scipy.stats import gaussian_kde

    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    pad = 0.1 * (hi - lo)
    x = np.linspace(lo - pad, hi + pad, grid)
    pa, pb = gaussian_kde(a)(x), gaussian_kde(b)(x)
    return float(_trapezoid(np.minimum(pa, pb), x))


def miscalibration_area(y, pred, std, n_levels: int = 50) -> float:
    """Area between the observed and expected coverage of Gaussian intervals (0 = calibrated)."""
    from scipy.stats import norm

    y, pred, std = (np.asarray(v, float) for v in (y, pred, std))
    std = np.clip(std, 1e-12, None)
    z = np.abs(pred - y) / std
    expected = np.linspace(0.01, 0.99, n_levels)
    observed = np.array([np.mean(z <= norm.ppf(0.5 + p / 2)) for p in expected])
    return float(_trapezoid(np.abs(observed - expected), expected))


def spearman_error_vs_std(y, pred, std) -> float:
    """Spearman ρ between |error| and σ: > 0 means larger σ flags larger errors."""
    from scipy.stats import spearmanr

    err = np.abs(np.asarray(pred, float) - np.asarray(y, float))
    std = np.asarray(std, float)
    if np.ptp(std) == 0 or np.ptp(err) == 0:
        return float("nan")
    return float(spearmanr(err, std).statistic)


def all_metrics(y_train, y_test, pred_test, std_test=None) -> dict:
    out = regression_metrics(y_test, pred_test)
    out["extrapolative_precision"] = extrapolative_precision(y_train, y_test, pred_test)
    out["ood_recall"] = ood_recall(y_test, pred_test)
    out["kde_overlap_train_test"] = kde_overlap(y_train, y_test)
    if std_test is not None:
        out["miscalibration_area"] = miscalibration_area(y_test, pred_test, std_test)
        out["spearman_abs_err_std"] = spearman_error_vs_std(y_test, pred_test, std_test)
    return out
