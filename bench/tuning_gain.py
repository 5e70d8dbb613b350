"""Does the registered model beat an untuned XGBoost on the period that follows its data? Side by side, one run.

The newest ``--following`` share of a dataset plays the future. On the rest, the
train flow's own steps run (time-series cross-validated Optuna search, logistic
baseline, winner; the registered model is the final fit on every one of those
rows). Every model is scored by ROC-AUC on the following period:

- registered: what ``slipway run train`` registers now;
- previous rule: the same winner fitted without the newest ``train.test_fraction`` (what was registered before);
- untuned XGBoost (library defaults) and the logistic baseline, both fitted on all the same rows.

Usage: ``uv run python -m bench.tuning_gain [--params FILE] [--seeds N] [--rows N]``. With a
``generate:`` section the data is generated (one dataset per seed); without one,
``data.source`` is read and typed as ingest does (e.g. ``examples/flights/params.yaml``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import mlflow
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from features import expectations, gold, validation
from models import metrics, registry, training, tuning
from models.pyfunc import ScoringModel
from slipway import storage
from slipway.datagen import generate_leads
from slipway.settings import Settings, load_settings

TIMESTAMP = "event_timestamp"


def _gold(silver: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    data = settings.data
    joined = gold.build_labels(silver, data).merge(gold.build_features(silver, data), on=[data.entity, data.timestamp])
    return joined.rename(columns={data.timestamp: TIMESTAMP})


def generated_frame(settings: Settings, seed: int) -> pd.DataFrame:
    """Generated leads typed and cleaned as ingest would, joined to labels as Feast would."""
    assert settings.generate is not None
    raw = generate_leads(settings.generate.model_copy(update={"seed": seed})).frame.astype(str)
    return source_frame_from(raw, settings)


def source_frame_from(raw: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Accepted rows of a raw batch, as ingest's typing, GX suite and verdict leave them in silver."""
    data = settings.data
    parsed = storage.ParsedBatch(raw.reset_index(drop=True), None, [])
    typed = validation.type_batch(parsed.frame, data)
    suite = expectations.validate(typed.frame, data, "bench")
    duplicates = validation.duplicate_followers(typed.frame, [data.entity, data.timestamp], suite.duplicate_rows)
    verdict = validation.decide(parsed, typed, suite.failures, duplicates, None, data)
    return _gold(verdict.accepted, settings)


def file_frame(settings: Settings) -> pd.DataFrame:
    return source_frame_from(storage.parse(storage.fetch(settings.data.source)).frame, settings)


def compare(frame: pd.DataFrame, settings: Settings, following: float) -> tuple[dict[str, float], Pipeline, pd.DataFrame]:
    """AUCs on the following period, the registered pipeline, and the following period's rows."""
    data, cfg = settings.data, settings.train
    ordered = frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * (1 - following))
    known, future = ordered[:cut], ordered[cut:]
    future_x, future_y = gold.to_feature_frame(future, data), future[data.label].to_numpy(dtype=int)
    split = training.time_split(known, data, cfg, TIMESTAMP)
    everything = split.everything()

    started = time.perf_counter()
    best = tuning.tune(tuning.create_study(cfg, f"bench-{time.monotonic_ns()}", None), split, data, cfg)
    baseline_cv, _ = tuning.cross_validate(split.folds(cfg.cv_folds), lambda part, _: training.fit_baseline(part, data, cfg), cfg)
    trees = int(best.user_attrs["best_iteration"])
    xgboost_wins = float(best.value or 0) >= baseline_cv["roc_auc"]

    def winner(part: training.Part) -> Pipeline:
        if xgboost_wins:
            return training.refit_xgboost(part, data, cfg, best.params, trees)
        return training.fit_baseline(part, data, cfg)

    registered, previous = winner(everything), winner(split.development)
    seconds = time.perf_counter() - started
    untuned = Pipeline([("prep", training.preprocessor(data, scale=False)), ("model", XGBClassifier(random_state=cfg.seed))])
    untuned.fit(everything.X, everything.y)
    baseline = training.fit_baseline(everything, data, cfg)

    def auc(model: Pipeline) -> float:
        return metrics.classification_metrics(future_y, training.predict_proba(model, future_x), 0.1)["roc_auc"]

    return (
        {
            "registered": auc(registered),
            "previous": auc(previous),
            "untuned": auc(untuned),
            "baseline": auc(baseline),
            "winner_is_xgboost": float(xgboost_wins),
            "rows": float(len(known)),
            "following_rows": float(len(future)),
            "seconds": seconds,
        },
        registered,
        future,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, default=3, help="generated datasets to compare on (generated data only)")
    parser.add_argument("--rows", type=int, default=None, help="use only the newest N rows of a file (faster)")
    parser.add_argument("--following", type=float, default=0.2, help="newest share of rows that plays the future")
    args = parser.parse_args()
    settings = load_settings(args.params)
    cfg = settings.train
    if settings.generate is not None:
        frames = [(f"seed {seed}", generated_frame(settings, seed)) for seed in range(args.seeds)]
    else:
        frame = file_frame(settings)
        if args.rows:
            frame = frame.sort_values(TIMESTAMP, kind="stable").tail(args.rows)
        frames = [(settings.registry.model_name, frame)]
    print(f"{args.params}: {cfg.n_trials} trials, {cfg.cv_folds} CV folds, following period = newest {args.following:.0%}")
    header = f"{'data':>14} {'rows':>8} {'registered':>11} {'previous':>9} {'untuned':>8} {'baseline':>9}"
    print(f"{header} {'reg/untuned':>12} {'reg/previous':>13} {'reg/baseline':>13} {'tune s':>7}")
    results = []
    for label, frame in frames:
        r, registered, future = compare(frame, settings, args.following)
        results.append(r)
        aucs = f"{r['registered']:>11.4f} {r['previous']:>9.4f} {r['untuned']:>8.4f} {r['baseline']:>9.4f}"
        ratios = f"{r['registered'] / r['untuned']:>12.4f} {r['registered'] / r['previous']:>13.4f}"
        print(f"{label:>14} {int(r['rows']):>8} {aucs} {ratios} {r['registered'] / r['baseline']:>13.4f} {r['seconds']:>7.1f}")
    if len(results) > 1:
        mean = pd.DataFrame(results).mean()
        aucs = f"{mean['registered']:>11.4f} {mean['previous']:>9.4f} {mean['untuned']:>8.4f} {mean['baseline']:>9.4f}"
        ratios = f"{mean['registered'] / mean['untuned']:>12.4f} {mean['registered'] / mean['previous']:>13.4f}"
        print(f"{'mean':>14} {int(mean['rows']):>8} {aucs} {ratios} {mean['registered'] / mean['baseline']:>13.4f}")
    print(f"winner was XGBoost in {int(np.sum([r['winner_is_xgboost'] for r in results]))} of {len(results)}")
    if settings.generate is None:
        print(contract_check(settings, registered, future))


def contract_check(settings: Settings, pipeline: Pipeline, future: pd.DataFrame) -> str:
    """Save the registered fit as the train flow logs it, load it with plain MLflow, score ``pd.read_csv`` rows."""
    data = settings.data
    with tempfile.TemporaryDirectory() as tmp:
        model = ScoringModel(pipeline, data)
        mlflow.pyfunc.save_model(f"{tmp}/model", python_model=model, signature=registry.signature(data))
        loaded = mlflow.pyfunc.load_model(f"{tmp}/model")
        raw = pd.read_csv(settings.data.source)  # as a user reads the file: integer columns stay int64
        raw = raw[raw[data.entity].astype(str).isin(set(future[data.entity].astype(str)))]
        direct = np.asarray(loaded.predict(raw[data.features]), dtype=float)
    typed = future.set_index(future[data.entity].astype(str)).loc[raw[data.entity].astype(str).tolist()]
    expected = training.predict_proba(pipeline, gold.to_feature_frame(typed, data))
    dtypes = ", ".join(sorted({str(t) for t in raw[data.features].dtypes}))
    diff = float(np.max(np.abs(direct - expected)))
    return (
        f"pyfunc on pd.read_csv({data.source}) [{dtypes}]: {len(direct)} rows scored, max |diff| to the typed scores {diff:.2e}"
    )


if __name__ == "__main__":
    main()
