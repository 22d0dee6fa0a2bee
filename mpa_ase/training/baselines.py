"""Simple baselines on the frozen backbone features, for the same splits the
heads are evaluated on: ridge regression on pooled per-atom embeddings."""

from __future__ import annotations

import numpy as np

from mpa_ase.training.embeddings import EmbeddingCache


def pooled_features(cache: EmbeddingCache, samples) -> np.ndarray:
    """Per sample: [mean, sum / 10] of its conformers' per-atom embeddings, averaged
    over conformers (the sum lets a linear model see size for extensive targets)."""
    rows = []
    for s in samples:
        per = []
        for k in s.keys:
            _, f = cache.store[k]
            f = f.double().numpy()
            per.append(np.concatenate([f.mean(0), f.sum(0) / 10.0]))
        rows.append(np.mean(per, axis=0))
    return np.asarray(rows)


def ridge_baseline(cache: EmbeddingCache, train, val, test, log_target: bool = False,
                   alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)) -> dict:
    """Ridge on standardised pooled features, alpha chosen on ``val`` (train when
    ``val`` is empty); returns test MAE in the target's units and the alpha."""
    xtr, xte = pooled_features(cache, train), pooled_features(cache, test)
    xva = pooled_features(cache, val) if val else xtr
    f = np.log10 if log_target else (lambda v: v)
    finv = (lambda v: 10.0 ** v) if log_target else (lambda v: v)
    ytr = f(np.array([s.value for s in train]))
    yva = np.array([s.value for s in (val or train)])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
    a, b, c = (xtr - mu) / sd, (xva - mu) / sd, (xte - mu) / sd
    ym = ytr.mean()
    best = None
    for alpha in alphas:
        w = np.linalg.solve(a.T @ a + alpha * len(a) * np.eye(a.shape[1]), a.T @ (ytr - ym))
        mae = float(np.mean(np.abs(finv(b @ w + ym) - yva)))
        if best is None or mae < best[0]:
            best = (mae, alpha, w)
    _, alpha, w = best
    pred = finv(c @ w + ym)
    return {"test_mae": float(np.mean(np.abs(pred - np.array([s.value for s in test])))), "alpha": alpha,
            "n_train": len(train), "n_test": len(test)}
