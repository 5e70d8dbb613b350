"""Optuna on PostgreSQL: parallel worker processes share one study."""

from __future__ import annotations

import os
from collections.abc import Callable

import optuna
import pytest

from models import training, tuning
from slipway.settings import TrainSettings
from tests.models.conftest import DATA, lead_frame

pytestmark = pytest.mark.services


def test_parallel_workers_share_one_study_on_postgres(new_database: Callable[[str], str]) -> None:
    url = new_database("optuna")
    cfg = TrainSettings(n_trials=8, max_estimators=200, seed=1, workers=2)
    split = training.time_split(lead_frame(4000, seed=3), DATA, cfg, "event_timestamp")
    seen: list[int] = []
    study = tuning.create_study(cfg, "shared", url)
    best = tuning.tune(study, split, DATA, cfg, url, progress=lambda done, wanted, value: seen.append(done))

    stored = optuna.load_study(study_name="shared", storage=url)  # read back from PostgreSQL
    finished = stored.get_trials(states=tuning.FINISHED)
    assert cfg.n_trials <= len(finished) <= cfg.n_trials + cfg.workers - 1
    pids = {t.user_attrs["pid"] for t in finished}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
    assert len(optuna.get_all_study_names(storage=url)) == 1
    assert best.number == stored.best_trial.number and best.value == max(t.value for t in finished if t.value is not None)
    assert seen and seen[-1] == len(finished)
