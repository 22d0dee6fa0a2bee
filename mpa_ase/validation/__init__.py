"""Validation tools: identity splits (random, scaffold, cluster, forward) and
metrics for in- and out-of-distribution accuracy and uncertainty calibration."""

from mpa_ase.validation.metrics import (
    all_metrics,
    extrapolative_precision,
    kde_overlap,
    miscalibration_area,
    ood_recall,
    regression_metrics,
    spearman_error_vs_std,
)
from mpa_ase.validation.splits import SPLITS, apply_split, split

__all__ = ["SPLITS", "all_metrics", "apply_split", "extrapolative_precision", "kde_overlap",
           "miscalibration_area", "ood_recall", "regression_metrics", "spearman_error_vs_std", "split"]
