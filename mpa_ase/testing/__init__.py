"""Helpers for the tests of backbone plugins (see :mod:`mpa_ase.testing.conformance`)."""
