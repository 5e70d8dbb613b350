"""The Great Expectations 1.x suite for a configured dataset, and running it on a batch.

The suite is built from the configuration alone (columns, label domain, ranges,
uniqueness of entity+timestamp), so a new dataset needs no code. Validation runs
with ``COMPLETE`` results so every failing row is known by index.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult

from slipway.settings import DataSettings

UNIQUE_KEY = "expect_compound_columns_to_be_unique"


def build_suite(data: DataSettings, name: str = "silver") -> gx.ExpectationSuite:
    """Expectations every accepted row must meet."""
    suite = gx.ExpectationSuite(name=name)
    add = suite.add_expectation
    for column in data.required_columns:
        add(gx.expectations.ExpectColumnValuesToNotBeNull(column=column))
    add(gx.expectations.ExpectColumnValuesToBeInSet(column=data.label, value_set=[0, 1]))
    for column, (low, high) in data.ranges.items():
        add(gx.expectations.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high))
    add(gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=[data.entity, data.timestamp]))
    return suite


@dataclass
class SuiteRun:
    """GX's result and the failing rows it found, by expectation."""

    result: ExpectationSuiteValidationResult
    failures: dict[int, list[str]]
    duplicate_rows: list[int]

    def to_json(self) -> dict[str, Any]:
        return dict(self.result.to_json_dict())  # type: ignore[no-untyped-call]


def _describe(kind: str, kwargs: dict[str, Any]) -> str:
    column = kwargs.get("column")
    if kind == "expect_column_values_to_not_be_null":
        return f"{column}: missing value"
    if kind == "expect_column_values_to_be_between":
        return f"{column}: outside [{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
    if kind == "expect_column_values_to_be_in_set":
        return f"{column}: not in {kwargs.get('value_set')}"
    return f"{kind}({column or kwargs.get('column_list')})"


def validate(frame: pd.DataFrame, data: DataSettings, batch_name: str) -> SuiteRun:
    """Run the suite on a typed batch in an ephemeral GX context."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    source = context.data_sources.add_pandas("slipway")
    batch_definition = source.add_dataframe_asset(batch_name).add_batch_definition_whole_dataframe("batch")
    suite = context.suites.add(build_suite(data))
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    failures: dict[int, list[str]] = defaultdict(list)
    duplicates: list[int] = []
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        assert config is not None
        rows = [int(r) for r in (outcome.result or {}).get("unexpected_index_list") or []]
        if config.type == UNIQUE_KEY:
            duplicates.extend(rows)
            continue
        message = _describe(config.type, config.kwargs)
        for row in rows:
            failures[row].append(message)
    return SuiteRun(result, dict(failures), duplicates)
