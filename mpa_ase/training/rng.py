"""Seeded random streams that leave the caller's global torch RNG alone."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def seeded(seed: int, device=None):
    """Run the block with torch's RNG seeded to ``seed`` (CPU, and ``device``'s
    when it is CUDA), then restore the global state the caller had.

    Module initialisation and dropout draw from torch's global generator and
    cannot take a ``torch.Generator``; forking the global state gives them a
    reproducible stream without reseeding the user's process behind its back.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
