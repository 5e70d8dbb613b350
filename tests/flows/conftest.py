from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="package", autouse=True)
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for the in-process flow tests."""
    with prefect_test_harness(server_startup_timeout=180):
        yield
