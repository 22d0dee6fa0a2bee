"""Simple baselines on the frozen backbone features, for the same splits the
heads are evaluated on: ridge regression on pooled per-atom embeddings."""

from __future__ import annotations

import numpy as np
import torch

from mpa_ase.training.embeddings import EmbeddingCache


def pooled_features(cache: EmbeddingCache, samples, trunk=None) -> np.ndarray:
    """Per sample: [mean, sum / 10] of its conformers' per-atom embeddings (passed
    through ``trunk`` if given), averaged over conformers (the sum lets a linear
    model see size for extensive targets)."""
    rows = []
    with torch.no_grad():
        for s in samples:
            per = []
            for k in s.keys:
                _, f = cache.store[k]
                f = (f if trunk is None else trunk(f)).double().numpy()
                per.append(np.concatenate([f.mean(0), f.sum(0) / 10.0]))
            rows.append(np.mean(per, axis=0))
    return np.asarray(rows)


def ridge_fit_predict(xtr, ytr, xva, yva, xte, log_target: bool = False,
                      alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)) -> tuple[np.ndarray, float]:
    """Ridge on standardised features, alpha chosen by MAE on (``xva``, ``yva``);
    returns the predictions for ``xte`` in the target's units and the alpha."""
    f = np.log10 if log_target else (lambda v: v)
    finv = (lambda v: 10.0 ** v) if log_target else (lambda v: v)
    t = f(np.asarray(ytr, dtype=float))
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
    a, b, c = (xtr - mu) / sd, (xva - mu) / sd, (xte - mu) / sd
    ym = t.mean()
    best = None
    for alpha in alphas:
        w = np.linalg.solve(a.T @ a + alpha * len(a) * np.eye(a.shape[1]), a.T @ (t - ym))
        mae = float(np.mean(np.abs(finv(b @ w + ym) - yva)))
        if best is None or mae < best[0]:
            best = (mae, alpha, w)
    _, alpha, w = best
    return finv(c @ w + ym), alpha


def ridge_baseline(cache: EmbeddingCache, train, val, test, log_target: bool = False,
                   alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)) -> dict:
    """Ridge on standardised pooled features, alpha chosen on ``val`` (train when
    ``val`` is empty); returns test MAE in the target's units and the alpha."""
    xtr, xte = pooled_features(cache, train), pooled_features(cache, test)
    xva = pooled_features(cache, val) if val else xtr
    yva = np.array([s.value for s in (val or train)])
    pred, alpha = ridge_fit_predict(xtr, np.array([s.value for s in train]), xva, yva, xte, log_target, alphas)
    return {"test_mae": float(np.mean(np.abs(pred - np.array([s.value for s in test])))), "alpha": alpha,
            "n_train": len(train), "n_test": len(test)}
