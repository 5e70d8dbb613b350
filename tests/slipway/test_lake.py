"""The lake's ledger of ingested contents, including after a crash between writing silver and the ledger."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from slipway import lake
from slipway.paths import Home
from slipway.storage import RawBatch


def test_a_batch_killed_before_its_ledger_entry_is_recognised_from_silver(tmp_path: Path) -> None:
    home, batch = Home(tmp_path), RawBatch("leads.csv", "leads.csv", b"lead_id,x\nL1,1\nL2,2\nL3,oops\n")
    assert lake.ingested(home, batch) is None
    batch_id = lake.new_batch_id(batch)
    lake.write_parquet(pd.DataFrame({"lead_id": ["L1", "L2"]}), home.silver / f"{batch_id}.parquet")
    lake.write_parquet(pd.DataFrame({"lead_id": ["L3"]}), home.quarantine / f"{batch_id}.parquet")
    # ... SIGKILL here: silver and quarantine written, the ledger not
    found = lake.ingested(home, batch)
    assert found is not None
    assert (found["batch_id"], found["rows_in"], found["rows_accepted"], found["rows_quarantined"]) == (batch_id, 3, 2, 1)
    assert (home.silver / lake.LEDGER / f"{batch.md5}.json").is_file()  # completed, once
    other = RawBatch("leads.csv", "leads.csv", b"lead_id,x\nL9,9\n")
    assert lake.ingested(home, other) is None  # another content is not taken for it
