"""Errors the CLI maps to its own exit codes, kept free of heavy imports so ``slipway`` starts fast."""

from __future__ import annotations


class Refused(RuntimeError):
    """A run that declined to start (another holds what it needs, or policy forbids it now); ``slipway`` exits 4."""
