"""The model contract: the registered pyfunc scores frames as readers type them.

A public dataset's integer columns (ages, counts, days) come out of ``pd.read_csv``
as int64, or float64 once a value is missing; a coded category comes out as a
number. The registered model must score all of them, equal to the scores of the
same rows as the feature store serves them (float64 numbers, text categories).
"""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from models import registry, training
from models.fast_scorer import FastScorer
from models.pyfunc import ScoringModel
from slipway.paths import Home
from slipway.tracking import use_experiment
from tests.models.conftest import CFG, DATA

REGION_CODES = {"north": 1, "south": 2, "east": 3, "west": 4}


@pytest.fixture
def coded(split: training.Split) -> tuple[training.Part, pd.DataFrame]:
    """The test slice as the feature store serves it, and as integers in a file: whole counts, a coded region."""
    served = split.test.X.copy()
    for column in DATA.numeric:
        served[column] = served[column].round()
    codes = {region: str(REGION_CODES.get(region, 9)) for region in served["region"].unique()}
    served["region"] = served["region"].map(codes)  # ingest keeps categories as text: "1"
    served.loc[served.index[0], "page_views"] = np.nan  # one gap: that column reads as float64
    dev = split.development
    train = dev.X.assign(region=dev.X["region"].map(lambda r: str(REGION_CODES.get(r, 9))))
    return training.Part(train.round(), dev.y, dev.times), served


@pytest.mark.parametrize("family", ["xgboost", "logistic_regression"])
def test_registered_model_scores_read_csv_and_read_parquet_output(
    home: Path, tmp_path: Path, coded: tuple[training.Part, pd.DataFrame], family: str
) -> None:
    train, served = coded
    if family == "xgboost":
        pipeline = training.refit_xgboost(train, DATA, CFG, {"max_depth": 3}, n_estimators=20)
    else:
        pipeline = training.fit_baseline(train, DATA, CFG)
    use_experiment("contract", Home.current())
    with mlflow.start_run() as run:
        version = registry.log_and_register(run, ScoringModel(pipeline, DATA), served.head(5), "contract", {"k": "v"})
    model = mlflow.pyfunc.load_model(f"models:/contract/{version.version}")  # plain MLflow, as any consumer loads it

    file_frame = served.copy()
    for column in DATA.numeric:  # whole numbers written as integers, the gap left empty
        file_frame[column] = file_frame[column].astype("Int64")
    file_frame.to_csv(tmp_path / "rows.csv", index=False)
    file_frame.to_parquet(tmp_path / "rows.parquet", index=False)
    from_csv = pd.read_csv(tmp_path / "rows.csv")
    from_parquet = pd.read_parquet(tmp_path / "rows.parquet")
    assert from_csv["calls"].dtype == np.int64 and from_csv["page_views"].dtype == np.float64
    assert from_csv["region"].dtype == np.int64  # a coded category, typed as a number by the reader
    assert str(from_parquet["calls"].dtype) == "Int64"  # pandas' nullable integers

    expected = model.predict(served)
    assert np.isfinite(expected).all() and len(expected) == len(served)
    np.testing.assert_allclose(model.predict(from_csv), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.predict(from_parquet), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.predict(from_csv.astype({"calls": "int32"})), expected, rtol=0, atol=1e-12)
    # the service's and the batch flow's scorer agree on the same frames
    fast = FastScorer(pipeline, DATA)
    np.testing.assert_allclose(fast.predict_frame(from_csv), expected, rtol=1e-5, atol=1e-6)

    info = mlflow.models.get_model_info(f"models:/contract/{version.version}")
    assert info.signature is not None
    assert info.signature.inputs.input_names() == DATA.features  # the contract still names every column
    tags = mlflow.MlflowClient().get_model_version("contract", version.version).tags
    assert '"region":"categorical"' in tags[registry.INPUT_KINDS_TAG]


def test_registered_model_refuses_a_frame_without_a_declared_column(home: Path, split: training.Split) -> None:
    pipeline = training.fit_baseline(split.development, DATA, CFG)
    use_experiment("contract", Home.current())
    with mlflow.start_run() as run:
        version = registry.log_and_register(run, ScoringModel(pipeline, DATA), split.test.X.head(5), "contract", {})
    model = mlflow.pyfunc.load_model(f"models:/contract/{version.version}")
    with pytest.raises(KeyError, match="'meetings'"):
        model.predict(split.test.X.drop(columns=["meetings"]))
