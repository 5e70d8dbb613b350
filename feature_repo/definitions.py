"""Feast definitions for ``feast apply`` run by hand in this directory.

Slipway's flows apply the same objects programmatically; both are built from the
params file (``SLIPWAY_PARAMS``, default ``../params.yaml``), so a new dataset
needs no edit here.
"""

import os
from pathlib import Path

from features.feast_defs import build_definitions
from slipway.paths import Home
from slipway.settings import load_settings

_params = os.environ.get("SLIPWAY_PARAMS", str(Path(__file__).resolve().parent.parent / "params.yaml"))
_settings = load_settings(_params)
_definitions = build_definitions(_settings.data, _settings.features, Home.current())

entity = _definitions.entity
source = _definitions.source
feature_view = _definitions.view
feature_service = _definitions.service
