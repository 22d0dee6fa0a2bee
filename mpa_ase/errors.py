"""Exceptions raised by mpa-ase.

All input problems derive from :class:`MPAInputError` (a ``ValueError``) so that
callers can catch them in one place; each message names what is wrong.
"""

from __future__ import annotations


class MPAInputError(ValueError):
    """The structure handed to mpa-ase cannot be evaluated as given."""


class UnsupportedElementError(MPAInputError):
    """The structure contains an element the backbone was not trained on."""


class OverlappingAtomsError(MPAInputError):
    """Two atoms are closer than the minimum allowed distance."""


class BackboneNotFoundError(LookupError):
    """No installed package provides the requested backbone."""


class CheckpointError(RuntimeError):
    """A model file is missing, truncated or not an mpa-ase checkpoint."""
