"""Holdout ROC-AUC of the tuned model against an untuned XGBoost and the baseline, side by side.

Runs the same pure code as the train flow (typing, gold, time split, Optuna,
refit) on the configured demo data, without servers, and prints one table with
ratios. Usage: ``uv run python -m bench.tuning_gain [--params FILE] [--seeds N]``.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from features import gold, validation
from models import metrics, training, tuning
from slipway.datagen import generate_leads
from slipway.settings import Settings, load_settings


def training_frame(settings: Settings, seed: int) -> pd.DataFrame:
    """Generated leads typed and cleaned as ingest would, joined to labels as Feast would."""
    assert settings.generate is not None, "the benchmark needs a generate: section"
    data = settings.data
    raw = generate_leads(settings.generate.model_copy(update={"seed": seed})).frame.astype(str)
    typed = validation.type_batch(raw, data)
    silver = typed.frame.dropna().drop_duplicates([data.entity, data.timestamp])
    silver[data.label] = silver[data.label].astype("int8")
    joined = gold.build_labels(silver, data).merge(gold.build_features(silver, data), on=[data.entity, data.timestamp])
    return joined.rename(columns={data.timestamp: "event_timestamp"})


def compare(settings: Settings, seed: int) -> dict[str, float]:
    data, cfg = settings.data, settings.train
    split = training.time_split(training_frame(settings, seed), data, cfg, "event_timestamp")
    full = split.train_and_validation()

    def auc(model: object) -> float:
        return metrics.classification_metrics(split.test.y, training.predict_proba(model, split.test.X), 0.1)["roc_auc"]

    started = time.perf_counter()
    best = tuning.tune(tuning.create_study(cfg, f"bench-{seed}", None), split, data, cfg)
    tuned = training.refit_xgboost(full, data, cfg, best.params, int(best.user_attrs["best_iteration"]))
    tuning_seconds = time.perf_counter() - started
    untuned_model = XGBClassifier(random_state=cfg.seed)
    untuned = Pipeline([("prep", training.preprocessor(data, scale=False)), ("model", untuned_model)])
    untuned.fit(full.X, full.y)
    baseline = training.fit_baseline(full, data, cfg)
    return {"tuned": auc(tuned), "untuned": auc(untuned), "baseline": auc(baseline), "seconds": tuning_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, default=3, help="independent datasets to compare on")
    args = parser.parse_args()
    settings = load_settings(args.params)
    print(f"{'seed':>6} {'tuned':>8} {'untuned':>8} {'baseline':>9} {'tuned/untuned':>14} {'trials':>7} {'tune s':>7}")
    rows = []
    for seed in range(args.seeds):
        r = compare(settings, seed)
        rows.append(r)
        ratio = r["tuned"] / r["untuned"]
        aucs = f"{r['tuned']:>8.4f} {r['untuned']:>8.4f} {r['baseline']:>9.4f}"
        print(f"{seed:>6} {aucs} {ratio:>14.4f} {settings.train.n_trials:>7} {r['seconds']:>7.1f}")
    mean = pd.DataFrame(rows).mean()
    aucs = f"{mean['tuned']:>8.4f} {mean['untuned']:>8.4f} {mean['baseline']:>9.4f}"
    print(f"{'mean':>6} {aucs} {mean['tuned'] / mean['untuned']:>14.4f}")


if __name__ == "__main__":
    main()
