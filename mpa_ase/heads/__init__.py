"""Property heads: what ``MPACalculator`` returns beyond energy, forces, stress.

A head reads the backbone's per-atom embeddings and predicts one property
with a declared unit, nature (intensive/extensive) and uncertainty (spread
of a deep ensemble of readouts).
"""

from mpa_ase.heads.head import PROBLEMS, TRANSFORMS, PropertyHead, TargetTransform
from mpa_ase.heads.readouts import READOUTS, Readout
from mpa_ase.heads.trunk import Trunk

__all__ = ["PROBLEMS", "READOUTS", "TRANSFORMS", "PropertyHead", "Readout", "TargetTransform", "Trunk"]
