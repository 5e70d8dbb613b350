"""The monitoring dashboard: each monitor run's Evidently snapshot in the model's project of a local workspace.

The Evidently UI (``evidently ui --workspace $SLIPWAY_HOME/evidently``, started by
``slipway up``) shows the project's dashboard over time: the share of drifted
features, PSI per feature, the score distribution, rows per window and, once labels
arrive, the ROC-AUC and the conversion rate. The panels are (re)written on every run, so a changed
feature list or a new Slipway version updates them; the snapshots are kept.
"""

from __future__ import annotations

from pathlib import Path

from evidently.core.metric_types import Metric
from evidently.core.report import Snapshot
from evidently.metrics import MeanValue, QuantileValue, ValueDrift
from evidently.sdk.models import DashboardPanelPlot, PanelMetric
from evidently.sdk.panels import line_plot_panel, text_panel
from evidently.ui.workspace import Project, Workspace

from slipway.settings import DataSettings

SCORE, LABEL, ROC_AUC = "score", "label", "roc_auc"


def project_name(model_name: str) -> str:
    return f"{model_name} monitoring"


def extra_metrics(data: DataSettings, labelled: bool, with_auc: bool = False) -> list[Metric]:
    """What the dashboard plots beyond the drift and summary presets (PSI, score quantiles, conversion, ROC-AUC)."""
    metrics: list[Metric] = [ValueDrift(column=c, method="psi") for c in [*data.features, SCORE]]
    metrics.append(QuantileValue(column=SCORE, quantile=0.9))  # the summary preset has the mean and the median
    if labelled:
        metrics.append(MeanValue(column=LABEL))
    if with_auc:
        metrics.append(MeanValue(column=ROC_AUC))
    return metrics


def panels(model_name: str, data: DataSettings) -> list[DashboardPanelPlot]:
    def psi(column: str) -> PanelMetric:
        return PanelMetric(legend=column, metric="ValueDrift", metric_labels={"column": column, "method": "psi"})

    return [
        text_panel(title=f"{model_name}: live traffic against the champion's training data, one point per monitor run"),
        line_plot_panel(
            title="Share of drifted features",
            size="half",
            values=[PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
            description="Evidently's per-column tests on the monitor's sample",
        ),
        line_plot_panel(
            title="PSI per feature",
            values=[psi(c) for c in [*data.features, SCORE]],
            description="population stability index against the training reference (above 0.25: drift)",
        ),
        line_plot_panel(
            title="Score distribution",
            size="half",
            values=[
                PanelMetric(legend="mean", metric="MeanValue", metric_labels={"column": SCORE}),
                PanelMetric(legend="median", metric="QuantileValue", metric_labels={"column": SCORE, "quantile": "0.5"}),
                PanelMetric(legend="p90", metric="QuantileValue", metric_labels={"column": SCORE, "quantile": "0.9"}),
            ],
        ),
        line_plot_panel(
            title="Rows per window",
            size="half",
            values=[PanelMetric(legend="rows compared", metric="RowCount", metric_labels={})],
            description="rows of the window given to Evidently (all of them, up to monitor.sample_rows)",
        ),
        line_plot_panel(
            title="ROC-AUC on labelled rows (once labels arrive)",
            size="half",
            values=[PanelMetric(legend="ROC-AUC", metric="MeanValue", metric_labels={"column": ROC_AUC})],
            description="the champion's ROC-AUC on every labelled row of the window (the monitor's, not a sample's)",
        ),
        line_plot_panel(
            title="Conversion rate of scored rows (once labels arrive)",
            size="half",
            values=[PanelMetric(legend="conversion", metric="MeanValue", metric_labels={"column": LABEL})],
        ),
    ]


def model_project(workspace: Workspace, model_name: str, data: DataSettings) -> Project:
    """The model's project (created once), with its dashboard panels written afresh."""
    name = project_name(model_name)
    found = workspace.search_project(name)
    project = found[0] if found else workspace.create_project(name, description=f"Slipway monitor runs of {model_name}")
    project.dashboard.clear_dashboard()
    for panel in panels(model_name, data):
        project.dashboard.add_panel(panel)
    return project


def record(workspace_dir: Path, model_name: str, data: DataSettings, snapshot: Snapshot, run_name: str) -> str:
    """Add one monitor run's snapshot to the model's project; returns the project id."""
    workspace = Workspace.create(str(workspace_dir))
    project = model_project(workspace, model_name, data)
    workspace.add_run(project.id, snapshot, name=run_name)
    return str(project.id)
