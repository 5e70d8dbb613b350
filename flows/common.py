"""Helpers shared by the flows: settings, the home, and demo data on first use."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from features import gold
from models import training
from slipway.datagen import generate_leads, write_generated
from slipway.feature_store import EVENT_TIMESTAMP, open_store, training_frame
from slipway.paths import Home
from slipway.settings import Settings, load_settings


@task(cache_policy=NO_CACHE)
def load_params(params: str) -> Settings:
    """Load and validate the params file the run was given."""
    return load_settings(params)


def home() -> Home:
    return Home.current()


@task(cache_policy=NO_CACHE)
def ensure_demo_source(settings: Settings) -> None:
    """Generate the configured demo data when ``data.source`` is a missing local file.

    Only configurations with a ``generate`` section do this; for any other dataset a
    missing source is an error raised where the source is read.
    """
    source = settings.data.source
    if settings.generate is None or source.startswith("s3://") or Path(source).exists():
        return
    logger = get_run_logger()
    cfg = settings.generate
    logger.info("%s not found: generating %d demo leads (seed %d)", source, cfg.rows, cfg.seed)
    write_generated(generate_leads(cfg), source)


def latest_labels(settings: Settings) -> pd.Series:
    """Each entity's most recent label from gold, indexed by entity id as text (how the prediction log keeps it)."""
    return gold.latest_labels(pd.read_parquet(home().gold / "labels.parquet"), settings.data)


def evaluation_window(settings: Settings) -> training.Part:
    """The newest, held-out slice of gold as the training split defines it, read through Feast."""
    frame = training_frame(open_store(), pd.read_parquet(home().gold / "labels.parquet"), settings)
    return training.time_split(frame, settings.data, settings.train, EVENT_TIMESTAMP).test
