"""Helpers shared by the flows: settings, the home, and the check that the source exists."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from slipway.paths import Home
from slipway.settings import Settings, load_settings
from slipway.storage import SourceError


@task(cache_policy=NO_CACHE)
def load_params(params: str) -> Settings:
    """Load and validate the params file the run was given."""
    return load_settings(params)


def home() -> Home:
    return Home.current()


def check_source(settings: Settings, params: str) -> None:
    """Refuse a missing local source, saying how to make demo data where there is a generator for it.

    Ingest never generates data itself: generated rows taken for real ones would be
    silently wrong. Only ``slipway demo`` and ``slipway generate`` write them.
    """
    source = settings.data.source
    if source.startswith("s3://") or Path(source).exists():
        return
    hint = f"; to use generated demo data, run: slipway generate --params {params}" if settings.generate else ""
    raise SourceError(f"data.source {source!r}: file not found{hint}")
