from collections.abc import Iterator

import pytest

from tests.serving import Served, sample_service


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with sample_service(tmp_path_factory.mktemp("served")) as service:
        yield service
