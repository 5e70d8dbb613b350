from pathlib import Path

import pytest
import yaml

from slipway.settings import SettingsError, load_settings, parse_settings, setting_rows, settings_schema, settings_table
from tests.conftest import REPO

MINIMAL = {"data": {"source": "x.csv", "entity": "id", "timestamp": "t", "label": "y", "numeric": ["a"]}}


@pytest.mark.parametrize("path", ["params.yaml", *sorted(str(p.relative_to(REPO)) for p in REPO.glob("examples/*/params.yaml"))])
def test_every_shipped_config_loads(path: str) -> None:
    settings = load_settings(REPO / path)
    assert settings.data.features


def test_unknown_key_is_named_with_its_section() -> None:
    raw = {**MINIMAL, "train": {"n_trial": 5}}
    with pytest.raises(SettingsError, match=r"cfg\.yaml: train\.n_trial: unknown key"):
        parse_settings(raw, "cfg.yaml")


def test_missing_required_key_is_named() -> None:
    raw = {"data": {k: v for k, v in MINIMAL["data"].items() if k != "label"}}
    with pytest.raises(SettingsError, match=r"data\.label: required key is missing"):
        parse_settings(raw)


def test_a_column_cannot_be_declared_twice() -> None:
    raw = {"data": {**MINIMAL["data"], "categorical": ["a"]}}
    with pytest.raises(SettingsError, match="'a' is declared twice"):
        parse_settings(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"promotion": {"slices": ["regoin"]}}, r"cfg\.yaml: promotion\.slices: 'regoin' is not a column in data\.categorical$"),
        ({"promotion": {"slices": ["a"]}}, r"promotion\.slices: 'a' is not a column in data\.categorical"),  # numeric
        ({"data": {**MINIMAL["data"], "timezone": "Mars/Olympus"}}, r"data\.timezone: 'Mars/Olympus' is not an IANA zone"),
        ({"data": {**MINIMAL["data"], "timestamp_format": "dd/mm/yyyy"}}, r"data\.timestamp_format: .* no strftime directive"),
        ({"data": {**MINIMAL["data"], "max_quarantine_share": 1.5}}, r"data\.max_quarantine_share: .*less than or equal to 1"),
        ({"train": {"cv_folds": 1}}, r"train\.cv_folds: .*greater than or equal to 2"),
        ({"train": {"validation_fraction": 0.2}}, r"train\.validation_fraction: unknown key"),
    ],
)
def test_configuration_mistakes_fail_at_load_naming_the_key(change: dict[str, object], message: str) -> None:
    raw = {**MINIMAL, "data": {**MINIMAL["data"], "categorical": ["region"]}, **change}
    with pytest.raises(SettingsError, match=message):
        parse_settings(raw, "cfg.yaml")


def test_ranges_must_name_numeric_columns() -> None:
    raw = {"data": {**MINIMAL["data"], "ranges": {"zz": [0, 1]}}}
    with pytest.raises(SettingsError, match=r"data\.ranges\.zz"):
        parse_settings(raw)


def test_missing_file_and_bad_yaml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nope\.yaml: params file not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(SettingsError, match=r"bad\.yaml: not valid YAML"):
        load_settings(bad)


def test_settings_are_frozen_and_fingerprint_tracks_content() -> None:
    a = parse_settings(MINIMAL)
    b = parse_settings({**MINIMAL, "train": {"n_trials": 3}})
    assert a.fingerprint() == parse_settings(MINIMAL).fingerprint()
    assert a.fingerprint() != b.fingerprint()
    with pytest.raises(Exception, match="frozen"):
        a.train.n_trials = 1  # type: ignore[misc]


def test_the_readme_configuration_table_is_generated_from_the_settings() -> None:
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- settings-table:start -->\n", "<!-- settings-table:end -->"
    shown = readme[readme.index(start) + len(start) : readme.index(end)]
    assert shown == settings_table(), "README's configuration table is stale: paste `slipway config --table` between its markers"


def test_every_setting_has_a_description_and_the_schema_carries_it() -> None:
    rows = setting_rows()
    assert len(rows) > 50 and all(description for *_, description in rows), [k for k, *_, d in rows if not d]
    schema = settings_schema()
    assert schema["$defs"]["TrainSettings"]["properties"]["n_trials"]["description"].startswith("Optuna trials")
    assert schema["$defs"]["TrainSettings"]["additionalProperties"] is False  # strict: unknown keys are errors


def test_the_demo_only_ever_shortens_durations_and_budgets() -> None:
    from flows.demo import demo_settings

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    shortened = demo_settings(raw)
    assert shortened["train"]["n_trials"] == 8 and shortened["promotion"]["shadow_seconds"] == 15
    tiny = demo_settings({**raw, "train": {**raw["train"], "n_trials": 2}})
    assert tiny["train"]["n_trials"] == 2 and tiny["promotion"]["max_score_psi"] == 1.0  # relaxations still apply
    parse_settings(shortened)
