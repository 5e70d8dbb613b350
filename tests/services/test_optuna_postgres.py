"""Optuna on PostgreSQL: parallel worker processes share one study."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import optuna
import psycopg
import pytest
from sqlalchemy import make_url

from models import training, tuning
from slipway.settings import TrainSettings
from tests.models.conftest import DATA, lead_frame

pytestmark = pytest.mark.services


def _peak_connections(url: str, stop: threading.Event, peak: list[int]) -> None:
    """Sample PostgreSQL's own view of the connections to the study's database until ``stop``."""
    database = make_url(url).database
    admin = make_url(url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:  # on another database: not counted
        while not stop.is_set():
            row = connection.execute("select count(*) from pg_stat_activity where datname = %s", (database,)).fetchone()
            peak.append(int(row[0]) if row else 0)
            stop.wait(0.1)


def test_parallel_workers_share_one_study_on_postgres(new_database: Callable[[str], str]) -> None:
    url = new_database("optuna")
    cfg = TrainSettings(n_trials=8, max_estimators=200, seed=1, workers=2)
    split = training.time_split(lead_frame(4000, seed=3), DATA, cfg, "event_timestamp")
    seen: list[int] = []
    stop, samples = threading.Event(), [0]
    sampler = threading.Thread(target=_peak_connections, args=(url, stop, samples), daemon=True)
    sampler.start()
    try:
        study = tuning.create_study(cfg, "shared", url)
        best = tuning.tune(study, split, DATA, cfg, url, progress=lambda done, wanted, value: seen.append(done))
    finally:
        stop.set()
        sampler.join(10)
    budget = (cfg.workers + 1) * tuning.CONNECTIONS_PER_PROCESS  # the README's connection budget for one training run
    assert 0 < max(samples) <= budget, f"{max(samples)} connections to the study's database, budget {budget}"

    stored = optuna.load_study(study_name="shared", storage=url)  # read back from PostgreSQL
    finished = stored.get_trials(states=tuning.FINISHED)
    assert cfg.n_trials <= len(finished) <= cfg.n_trials + cfg.workers - 1
    pids = {t.user_attrs["pid"] for t in finished}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
    assert len(optuna.get_all_study_names(storage=url)) == 1
    assert best.number == stored.best_trial.number and best.value == max(t.value for t in finished if t.value is not None)
    assert seen and seen[-1] == len(finished)
