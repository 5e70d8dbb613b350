"""Write ``machines.csv``: a small predictive-maintenance dataset that is not about leads.

Column names with dots and spaces and a yes/no label exercise the platform's
"any tabular dataset from configuration alone" promise. Seeded; rerun to rebuild.
"""

from pathlib import Path

import numpy as np
import pandas as pd


def make(rows: int = 4000, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stamps = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.uniform(0, 150 * 86400, rows)), unit="s")
    kind = rng.choice(["press", "lathe", "pump", "conveyor"], rows)
    site = rng.choice(["Plant A", "Plant B", "Plant C"], rows, p=[0.5, 0.3, 0.2])
    temp = rng.normal(70, 8, rows)
    vibration = rng.gamma(2.0, 1.5, rows)
    pressure = rng.normal(30, 4, rows)
    hours = rng.exponential(400, rows)
    logit = -4.2 + 0.08 * (temp - 70) + 0.45 * vibration + 0.002 * hours + 0.6 * (kind == "pump") - 0.4 * (site == "Plant A")
    failed = rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "machine id": [f"M-{i % 900:04d}" for i in range(rows)],
            "reading.time": stamps.strftime("%Y-%m-%d %H:%M:%S"),
            "sensor.temp": temp.round(2),
            "vibration level": vibration.round(3),
            "pressure psi": pressure.round(2),
            "hours since service": hours.round(1),
            "machine type": kind,
            "site": site,
            "failed": np.where(failed, "Yes", "No"),
        }
    )


if __name__ == "__main__":
    out = Path(__file__).with_name("machines.csv")
    make().to_csv(out, index=False)
    print(f"wrote {out}")
