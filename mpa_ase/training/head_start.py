"""Where a post-training head starts: from the mid-training heads that already
predict the target (``correlated``), the same property of another source
(``related``), from scratch (``fresh``), or whichever of several such starts
wins an inner cross-validation on the training split (``cv``).

The inner folds partition the training split; validation data only stop
each fold's training early, as they do for the final head, and test data
never enter the choice.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from mpa_ase.heads import PropertyHead, Trunk
from mpa_ase.training.embeddings import EmbeddingCache
from mpa_ase.training.trainer import Batcher, conformer_mean

HEAD_INITS = ("correlated", "related", "fresh", "cv")
DEFAULT_HEAD_INIT, DEFAULT_HEAD_INIT_TOP = "correlated", 3
# head_init: cv chooses among these unless head_init_cv.candidates says otherwise;
# trunk_lr_factor scales the trunk's learning rate relative to optim.lr
DEFAULT_CV_CANDIDATES = (
    {"head_init": "correlated", "head_init_top": 3},
    {"head_init": "correlated", "head_init_top": 3, "trunk_lr_factor": 0.1},
    {"head_init": "correlated", "head_init_top": 1},
    {"head_init": "related"},
)
# The baseline's own tuning, with the same budget (4 candidates x the same folds):
# a fresh head, at the configured learning rate, a 10x smaller trunk rate, and
# 0.3x / 3x both rates. Epochs are chosen by early stopping on the validation
# side in every fit, as for MPA.
DIRECT_CV_CANDIDATES = (
    {"head_init": "fresh"},
    {"head_init": "fresh", "trunk_lr_factor": 0.1},
    {"head_init": "fresh", "lr_factor": 0.3},
    {"head_init": "fresh", "lr_factor": 3.0},
)
CV_PRESETS = {"mpa": DEFAULT_CV_CANDIDATES, "direct": DIRECT_CV_CANDIDATES}
CANDIDATE_KEYS = {"head_init", "head_init_top", "trunk_lr_factor", "lr_factor"}
CV_KEYS = {"folds", "candidates", "choose", "epochs"}
# early_stopping: the final head stops on the validation side (whose errors then look better than
# new compounds' do); cv: it trains for the epochs its inner-fold fits took, and keeps its last weights
CV_EPOCHS = ("early_stopping", "cv")
# min: the lowest mean fold MAE; one_se: the first candidate (the declared default) unless
# another beats it by more than one standard error of their paired fold differences
CV_RULES = ("min", "one_se")


def check_head_init(head_init, top) -> None:
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init={head_init!r}; choose from {HEAD_INITS}")
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ValueError(f"head_init_top={top!r}: the number of source heads must be an integer >= 1")


def cv_options(cfg: dict) -> dict:
    """The checked ``head_init_cv`` options with defaults: folds, candidates."""
    opts = dict(cfg.get("head_init_cv") or {})
    unknown = set(opts) - CV_KEYS
    if unknown:
        raise ValueError(f"unknown head_init_cv option(s) {sorted(unknown)}; known: {sorted(CV_KEYS)}")
    opts = {"folds": 3, "candidates": "mpa", "choose": "min", "epochs": "early_stopping", **opts}
    if opts["choose"] not in CV_RULES:
        raise ValueError(f"head_init_cv.choose={opts['choose']!r}; choose from {CV_RULES}")
    if opts["epochs"] not in CV_EPOCHS:
        raise ValueError(f"head_init_cv.epochs={opts['epochs']!r}; choose from {CV_EPOCHS}")
    if opts["epochs"] == "cv" and (cfg.get("optim") or {}).get("keep", "best") != "best":
        raise ValueError("head_init_cv.epochs=cv reads the epochs from inner-fold fits that stop early; "
                         "it needs optim.keep: best")
    if isinstance(opts["candidates"], str):
        if opts["candidates"] not in CV_PRESETS:
            raise ValueError(f"head_init_cv.candidates={opts['candidates']!r}: a list of candidates or one of "
                             f"the presets {sorted(CV_PRESETS)}")
        opts["candidates"] = [dict(c) for c in CV_PRESETS[opts["candidates"]]]
    if not isinstance(opts["folds"], int) or isinstance(opts["folds"], bool) or opts["folds"] < 2:
        raise ValueError(f"head_init_cv.folds={opts['folds']!r}: needs an integer >= 2")
    if not opts["candidates"]:
        raise ValueError("head_init_cv.candidates is empty")
    for c in opts["candidates"]:
        if not isinstance(c, dict) or set(c) - CANDIDATE_KEYS or "head_init" not in c:
            raise ValueError(f"head_init_cv candidate {c!r}: a mapping with head_init and optionally "
                             f"{sorted(CANDIDATE_KEYS - {'head_init'})}")
        if c["head_init"] == "cv":
            raise ValueError("a head_init_cv candidate cannot itself be head_init: cv")
        check_head_init(c["head_init"], c.get("head_init_top", DEFAULT_HEAD_INIT_TOP))
        if "lr_factor" in c and not float(c["lr_factor"]) > 0:
            raise ValueError(f"lr_factor={c['lr_factor']!r} must be positive")
        if "trunk_lr_factor" in c and not float(c["trunk_lr_factor"]) >= 0:  # 0: the trunk stays as it is
            raise ValueError(f"trunk_lr_factor={c['trunk_lr_factor']!r} must be >= 0")
    return opts


def related_head(heads: dict[str, PropertyHead], prop: str) -> PropertyHead | None:
    """The mid-training head of the same property from another source (the one
    trained on most samples), or None. Head names are ``property__source``."""
    found = []
    for name, head in heads.items():
        if name.startswith(prop + "__"):
            m = re.search(r"n_train=(\d+)", head.trained_on or "")
            found.append((int(m.group(1)) if m else 0, name, head))
    return max(found, key=lambda x: (x[0], x[1]))[2] if found else None


def _negate_output(readout) -> None:
    """Flip the sign of a readout's output (its last linear layers)."""
    for lin in (getattr(readout, "pooled_mlp", [None])[-1], getattr(getattr(readout, "atomwise", None), "out", None)):
        if lin is not None:
            lin.weight.neg_()
            lin.bias.neg_()


@torch.no_grad()
def init_from_head(head: PropertyHead, source, seed: int, noise: float = 0.05) -> int:
    """Start the ensemble members of ``head`` from trained heads (parameters of the
    same name and shape), each perturbed by ``noise`` x the tensor's spread so
    the members still differ. Returns the number of tensors copied.

    ``source`` is one head, or a list of ``(head, sign)``: member k starts from
    entry k mod len, with its output negated where sign < 0.
    """
    sources = [(source, 1.0)] if isinstance(source, PropertyHead) else list(source)
    g = torch.Generator().manual_seed(seed)
    copied = 0
    for k, member in enumerate(head.members):
        src_head, sign = sources[k % len(sources)]
        src_member = src_head.members[(k // len(sources)) % len(src_head.members)]
        src = dict(src_member.named_parameters())
        for name, p in member.named_parameters():
            if name in src and src[name].shape == p.shape:
                q = src[name].to(p.dtype)
                spread = float(q.std()) if q.numel() > 1 else 0.0
                p.copy_(q + noise * spread * torch.randn(p.shape, generator=g, dtype=p.dtype))
                copied += 1
        if sign < 0:
            _negate_output(member)
    return copied


@torch.no_grad()
def rank_source_heads(trunk: Trunk, heads: dict[str, PropertyHead], target: PropertyHead, samples,
                      cache: EmbeddingCache) -> list[tuple[float, str]]:
    """Trained heads ordered by how well they already predict ``samples`` (the
    target's training set only): |Pearson r| between a head's ensemble-mean
    output and the target labels (log10 where the target is log-transformed).
    Only heads with the target's readout kind are candidates (a full copy),
    which also keeps crystal and molecular heads apart. Returns [(r, name)]."""
    if not heads or len(samples) < 5:
        return []
    batcher = Batcher(cache)
    y = np.array([s.value for s in samples], dtype=float)
    if target.transform.kind == "log10":
        y = np.log10(y)
    segments, feats, owner = batcher(samples)
    was_training = trunk.training
    trunk.eval()
    x = trunk(feats)
    trunk.train(was_training)
    ranked = []
    for name, head in heads.items():
        if head.readout_kind != target.readout_kind or head.problem != "regression":
            continue
        head.eval()
        z = conformer_mean(head.member_outputs(x, segments), owner, len(samples)).mean(0).double().numpy()
        if np.std(z) == 0 or not np.isfinite(z).all():
            continue
        r = float(np.corrcoef(z, y)[0, 1])
        if np.isfinite(r):
            ranked.append((r, name))
    return sorted(ranked, key=lambda t: (-abs(t[0]), t[1]))


def choose_sources(head_init: str, heads: dict[str, PropertyHead] | None, target_head: PropertyHead, prop: str,
                   train, trunk: Trunk, cache: EmbeddingCache, top: int = DEFAULT_HEAD_INIT_TOP,
                   min_r: float = 0.3):
    """The ``(head, sign)`` list a new target head starts from ([] = fresh), and a description.

    related: the same property from another source (most training samples);
    correlated: the ``top`` heads whose outputs correlate best with the
    target's training labels, if |r| >= min_r (any property: a solid-entropy
    target may start from a liquid-entropy head)."""
    check_head_init(head_init, top)
    if head_init == "cv":
        raise ValueError("head_init: cv is resolved to one of its candidates before heads are chosen")
    if not heads or head_init == "fresh":
        return [], "fresh"
    if head_init == "related":
        h = related_head(heads, prop)
        return ([(h, 1.0)], h.trained_on) if h is not None else ([], "fresh")
    ranked = [(r, n) for r, n in rank_source_heads(trunk, heads, target_head, train, cache) if abs(r) >= min_r]
    chosen = ranked[:top]
    return ([(heads[n], 1.0 if r >= 0 else -1.0) for r, n in chosen],
            "; ".join(f"{heads[n].trained_on} r={r:+.2f}" for r, n in chosen) or "fresh")




def inner_folds(train, folds: int, seed: int) -> list[tuple[list, list]]:
    """``folds`` (fit, held-out) pairs partitioning ``train`` by identity at random,
    so every training compound is scored once. Random, not the outer split's
    kind: the training side of a scaffold split keeps only the big scaffolds
    (2 for the CRC boiling points: acyclic and benzene), too few to group by."""
    ids = sorted({s.identity for s in train})
    if len(ids) < 2 * folds:
        return []
    rng = np.random.default_rng([seed, 7919])
    fold_of = {ids[j]: k % folds for k, j in enumerate(rng.permutation(len(ids)))}
    return [([s for s in train if fold_of[s.identity] != f], [s for s in train if fold_of[s.identity] == f])
            for f in range(folds)]


def select_by_cv(candidates: list[dict], folds: list[tuple[list, list]], score,
                 rule: str = "min") -> tuple[int, list[float]]:
    """Index of the chosen candidate and every candidate's mean ``score(candidate, fit, held)``
    over the folds.

    ``min``: the lowest mean (the first on ties). ``one_se``: the lowest mean
    among the first candidate and those whose paired fold differences to it
    are below zero by more than one standard error, so that a difference the
    folds cannot resolve keeps the declared default (with 3 folds, a later
    candidate can win by 1e-4 relative and then fail out of distribution).
    """
    if rule not in CV_RULES:
        raise ValueError(f"unknown CV rule {rule!r}; choose from {CV_RULES}")
    if not folds:
        return 0, [float("nan")] * len(candidates)
    scores = np.array([[score(c, fit, held) for fit, held in folds] for c in candidates], dtype=float)
    means = [float(m) for m in scores.mean(axis=1)]
    allowed = [i for i, m in enumerate(means) if np.isfinite(m)]
    if rule == "one_se" and len(folds) > 1 and 0 in allowed:
        def clearly_better(i: int) -> bool:
            d = scores[i] - scores[0]
            return bool(d.mean() + d.std(ddof=1) / np.sqrt(len(d)) < 0)
        allowed = [i for i in allowed if i == 0 or clearly_better(i)]
    return (min((means[i], i) for i in allowed)[1] if allowed else 0), means


def describe_candidate(c: dict) -> str:
    text = c["head_init"] + (f" top {c.get('head_init_top', DEFAULT_HEAD_INIT_TOP)}"
                             if c["head_init"] == "correlated" else "")
    text += f", lr x{c['lr_factor']:g}" if "lr_factor" in c else ""
    if "trunk_lr_factor" in c:
        text += ", trunk frozen" if float(c["trunk_lr_factor"]) == 0 else f", trunk lr x{c['trunk_lr_factor']:g}"
    return text
