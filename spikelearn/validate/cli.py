"""``spikelearn validate ...`` (registered by spikelearn.cli; must not import brian2 at import time)."""

from __future__ import annotations


def add_validate_parser(subparsers) -> None:
    """Register the ``validate`` command (nothing yet)."""
    return None
