"""SIGTERM (every rolling update and scale-down sends one) under load: every prediction answered 200 is in the log."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from models.routing import Mode, Routing
from slipway.prediction_log import read_prediction_log
from tests.serving import sample_service

pytestmark = pytest.mark.e2e  # starts real servers or processes


@pytest.mark.parametrize("mode", [Mode.CHAMPION, Mode.SHADOW])
def test_sigterm_under_load_logs_every_answered_prediction(tmp_path: Path, mode: Mode) -> None:
    # a long flush interval: without the shutdown hook most answered rows would still be in memory
    with sample_service(tmp_path, {"log_flush_seconds": 30.0}) as served:
        client = served.client()
        for key, value in Routing(mode).to_tags().items():
            client.set_registered_model_tag(served.settings.registry.model_name, key, value)
        time.sleep(served.settings.serving.poll_seconds * 4)
        answered, failed = [0] * 4, [0] * 4
        stop = threading.Event()

        def load(worker: int) -> None:
            with httpx.Client(timeout=10) as http:
                i = 0
                while not stop.is_set():
                    try:
                        response = http.post(f"{served.url}/predict", json={"rows": [served.rows[i % len(served.rows)]]})
                    except httpx.HTTPError:
                        failed[worker] += 1
                        time.sleep(0.05)
                    else:
                        if response.status_code == 200:
                            answered[worker] += 1
                        i += 1

        threads = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(4)
        served.process.send_signal(signal.SIGTERM)  # to the main process, as Kubernetes does
        served.process.wait(timeout=60)
        stop.set()
        for thread in threads:
            thread.join(15)
        logged = read_prediction_log(served.home.predictions)
        assert sum(answered) > 100, "too little load to mean anything"
        assert len(logged) == sum(answered), f"{sum(answered)} answered 200, {len(logged)} logged"
        if mode == Mode.SHADOW:
            assert logged["shadow_score"].notna().sum() + logged["error"].notna().sum() == len(logged)
