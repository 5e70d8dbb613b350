"""The ``slipway`` command line.

Exit codes: 0 success, 1 a flow failed, 2 a usage or configuration error (the
message names the file, key or parameter), 3 the data was rejected (the message
names the source and columns), 4 a promotion was refused or rolled back (the
message says at which step and why).
"""

from __future__ import annotations

import argparse
import inspect
import ipaddress
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from flows.registry import UnknownFlowError, load_flow
from slipway.catalog import FLOWS
from slipway.errors import Refused
from slipway.paths import Home, prepare_environment
from slipway.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

EXIT_FAILED, EXIT_USAGE, EXIT_DATA, EXIT_REFUSED = 1, 2, 3, 4


class UsageError(ValueError):
    """A command-line mistake; the message says which word is wrong."""


def parse_assignments(pairs: Sequence[str], flow_fn: Callable[..., Any]) -> dict[str, Any]:
    """``NAME=VALUE`` words as flow parameters; values are read as YAML scalars."""
    fn = getattr(flow_fn, "fn", flow_fn)
    accepted = set(inspect.signature(fn).parameters)
    hints = typing.get_type_hints(fn)
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"expected NAME=VALUE, got {pair!r}")
        if name not in accepted:
            raise UsageError(f"unknown parameter {name!r} for this flow; it takes: {', '.join(sorted(accepted))}")
        textual = hints.get(name) is str or str in typing.get_args(hints.get(name))
        out[name] = value if textual else (yaml.safe_load(value) if value else "")  # version=3 stays the string "3"
    return out


RESULT_KEYS = {
    "materialize": "feature_rows",
    "package": "bento",
    "rollback": "champion",
    "switch": "champion",
    "retrain": "challenger",
}


def result_line(name: str, result: Any) -> str:
    """The one line ``slipway run`` prints on stdout: the result's own ``line()``, or ``key=value``."""
    if hasattr(result, "line"):
        return str(result.line())
    return f"{RESULT_KEYS.get(name, name)}={result}"


def run_flow(name: str, params: str, assignments: Sequence[str]) -> Any:
    load_settings(params)  # fail fast, naming the key, before any server starts
    flow_fn = load_flow(name)
    kwargs = {"params": params, **parse_assignments(assignments, flow_fn)}
    if name == "promote" and not kwargs.get("request_signature") and os.environ.get(APPROVER_KEY_ENV):
        # the requester proves who asks the way an approver does: with their own key
        kwargs["request_signature"] = sign_request(params, str(kwargs.get("requested_by", "unknown")), kwargs.get("version"))
    result = flow_fn(**kwargs)
    print(result_line(name, result), flush=True)  # the run log has the flow's own output; stdout gets the result
    return result


def demo(params: str) -> None:
    """The whole loop on generated data; see ``flows/demo.py``."""
    from flows.demo import run_demo

    load_settings(params)
    run_demo(params)


def serve(params: str, port: int, host: str = "127.0.0.1") -> None:
    """Run the scoring service for the current champion (``bentoml serve``) in the foreground.

    On a loopback address by default; on any other a bearer token is required
    (``serving.token_env``) unless ``serving.allow_anonymous`` says otherwise. The
    service never gets the signing keys: it verifies decisions, it does not make them.
    """
    from pathlib import Path

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    settings = load_settings(params)
    loopback = host == "localhost" or _is_loopback(host)
    token_env = settings.serving.token_env
    if not loopback and not os.environ.get(token_env) and not settings.serving.allow_anonymous:
        raise UsageError(
            f"--host {host} serves beyond this machine: set {token_env} to require a bearer token, "
            "or serving.allow_anonymous: true in the params file to serve without one"
        )
    try:
        aliases = MlflowClient().get_registered_model(settings.registry.model_name).aliases or {}
    except MlflowException:
        aliases = {}
    if "champion" not in aliases:
        print(
            f"slipway: warning: no '{settings.registry.model_name}@champion' yet; /readyz answers 503 until one is promoted",
            file=sys.stderr,
        )
    repo = Path(__file__).resolve().parent.parent
    bentoml = Path(sys.executable).parent / "bentoml"
    env = {k: v for k, v in os.environ.items() if k not in (PROMOTION_KEY_ENV, APPROVER_KEY_ENV)}
    env["SLIPWAY_PARAMS"] = str(Path(params).resolve())
    command = [str(bentoml), "serve", "bentos.service:Scoring", "--host", host, "--port", str(port)]
    print(
        f"slipway: serving {settings.registry.model_name} on http://{host}:{port} (docs: /docs, OpenAPI: /docs.json)",
        flush=True,
    )
    os.chdir(repo)
    os.execve(command[0], command, env)  # become the server, so Ctrl-C and SIGTERM reach it directly


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from elsewhere


def history(params: str) -> None:
    """Which version was champion when, who decided, every other audited decision, and whether all sides agree."""
    from models.registry import CHAMPION, alias_version, audit_log, signed_state_problems
    from slipway.service_metrics import ServiceUnreachable, read_state

    settings = load_settings(params)
    name = settings.registry.model_name
    log = audit_log(Home.current().audit_log, name, settings.promotion.decision_key)
    count = log.verify()  # the chain, a torn tail and the head anchored in the registry
    entries = [e for e in log.entries() if e["model"] == name]
    print(f"{name}: {len(entries)} decisions (audit chain of {count} entries verified against the registry's anchor)")
    print(f"{'time':<33} {'event':<18} {'version':>7}  {'by':<14} details")
    for e in entries:
        details = ", ".join(f"{k}={v}" for k, v in e["details"].items())
        print(f"{e['time']:<33} {e['event']:<18} {e['version'] or '-':>7}  {e['actor']:<14} {details}")
    unverified = False
    try:
        state = read_state(settings.promotion.service_url)
        served, unverified = state.champion, state.unverified
    except ServiceUnreachable:
        served = None
    problems = champion_disagreements(entries, alias_version(name, CHAMPION), served)
    problems += [f"not signed: {p}" for p in signed_state_problems(name, settings.promotion.decision_key)]
    if unverified:
        problems.append("the service reports registry state it does not serve, because it is not signed (see /readyz)")
    for problem in problems:
        print(f"DISAGREEMENT: {problem}")
    if problems:
        raise RuntimeError(f"{name}: the audit log, the registry and the service disagree on the champion (see above)")
    print(f"agreement: audit log and registry{' and service' if served else ''} name the same champion")


def champion_disagreements(entries: Sequence[dict[str, Any]], registry_champion: str | None, served: str | None) -> list[str]:
    """What the audit log's last applied switch or rollback says against the registry's alias and the service."""
    applied = [e for e in entries if e["event"] in ("switch_applied", "rollback_applied", "champion_switch", "rollback")]
    logged = applied[-1]["version"] if applied else None
    problems = []
    if logged != registry_champion:
        problems.append(
            f"the registry's champion alias is v{registry_champion}, but the audit log's last switch made "
            f"v{logged} champion: the alias was changed outside the promote and rollback flows"
        )
    if served is not None and served != registry_champion:
        problems.append(f"the service serves v{served} as champion, the registry's alias says v{registry_champion}")
    return problems


APPROVER_KEY_ENV = "SLIPWAY_APPROVER_KEY"  # as slipway.signing.APPROVER_KEY_ENV, without importing cryptography here
PROMOTION_KEY_ENV = "SLIPWAY_PROMOTION_KEY"  # as models.decision.KEY_ENV


def _own_key(configured: str, name: str, where: str) -> Ed25519PrivateKey:
    """``SLIPWAY_APPROVER_KEY``'s private key, which must be the one configured for ``name``."""
    from slipway import signing

    try:
        key = signing.private_key_from_env(APPROVER_KEY_ENV)
    except signing.KeyProblem as exc:
        raise UsageError(str(exc)) from None
    if signing.public_text(key.public_key()) != signing.public_text(signing.public_key(configured, name)):
        raise UsageError(f"{APPROVER_KEY_ENV} is not the key of {name!r} ({where})")
    return key


def sign_request(params: str, requested_by: str, version: str | None) -> str:
    """A promotion request signed with ``SLIPWAY_APPROVER_KEY``: who asks for which version, and when.

    The value of the promote flow's ``request_signature`` (valid for an hour, and once).
    """
    from datetime import UTC, datetime

    from models.policy import Request

    settings = load_settings(params)
    cfg = settings.promotion
    configured = {**cfg.requester_keys, **cfg.approver_keys}.get(requested_by)
    if configured is None:
        raise SettingsError(
            f"{params}: promotion.requester_keys and promotion.approver_keys have no key for {requested_by!r}, "
            f"so {APPROVER_KEY_ENV} cannot sign the request (unset it to request unsigned: two approvers are then needed)"
        )
    key = _own_key(configured, requested_by, f"the key configured for {requested_by!r} in {params}")
    request = Request(settings.registry.model_name, version or "challenger", requested_by, datetime.now(UTC).isoformat())
    return request.signed(key)


def approve(params: str, run_id: str, approver: str, reject: bool, comment: str, sign_only: bool) -> None:
    """Answer a paused promotion, signed with the approver's key from ``SLIPWAY_APPROVER_KEY``.

    ``--sign-only`` prints the signature to paste into the form in the Prefect UI instead.
    """
    from models.policy import Answer
    from slipway import signing
    from slipway.orchestration import resume_paused

    settings = load_settings(params)
    configured = settings.promotion.approver_keys.get(approver)
    if configured is None:
        raise SettingsError(f"{params}: promotion.approver_keys has no key for {approver!r}")
    key = _own_key(configured, approver, f"promotion.approver_keys.{approver} in {params}")
    answer = Answer(approver, not reject, comment, "")
    signature = signing.sign(key, answer.message(run_id))
    if sign_only:
        print(signature)
        return
    fields = {"approver": approver, "approved": not reject, "comment": comment, "signature": signature}
    name = resume_paused(run_id, fields)
    decision = "rejection" if reject else "approval"
    print(f"signed {decision} by {approver} sent to promotion run {name} ({run_id}); the run checks it and carries on")


def stack_up(params: str, prefect_port: int, mlflow_port: int, dashboard_port: int) -> None:
    from flows.stack import up

    load_settings(params)
    print("slipway up: starting Prefect, the MLflow UI, the monitoring dashboard, the scoring service and the deployments …")
    stack = up(params, prefect_port, mlflow_port, dashboard_port)
    for name, entry in stack.items():
        pid = entry["pid"] or "external"
        print(f"  {name:<12} {entry['url']:<40} pid {pid}")
    print("Trigger flows and approve promotions in the Prefect UI; 'slipway down' stops the stack.")


def generate(params: str, output: str | None) -> None:
    from slipway.datagen import generate_leads, write_generated

    settings = load_settings(params)
    if settings.generate is None:
        raise SettingsError(f"{params}: generate: section is missing, nothing to generate")
    target = output or settings.data.source
    data = generate_leads(settings.generate)
    write_generated(data, target)
    print(f"wrote {len(data.frame)} rows to {target}")


def _is_data_error(exc: Exception) -> bool:
    """Whether the data, not the code, was at fault (imported only then: ``down`` and ``--help`` stay light)."""
    from features.validation import BatchRejected
    from slipway.batch_io import BatchSourceError
    from slipway.storage import SourceError

    return isinstance(exc, BatchRejected | SourceError | BatchSourceError)


def _log_failure(argv: Sequence[str] | None, exc: BaseException) -> Path:
    """Append the command and its full traceback to ``$SLIPWAY_HOME/logs/errors.log``; returns that path."""
    import traceback
    from datetime import UTC, datetime

    path = Home.current().root / "logs" / "errors.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["slipway", *(sys.argv[1:] if argv is None else argv)])
        with path.open("a", encoding="utf-8") as log:
            log.write(f"--- {datetime.now(UTC).isoformat()} {command}\n{''.join(traceback.format_exception(exc))}\n")
    except OSError as err:  # a full disk must not hide the original error
        print(f"slipway: could not write {path}: {err}", file=sys.stderr)
    return path


def config(params: str, schema: bool, table: bool) -> None:
    """Print the settings' JSON schema or the README's table of settings; by default, check the file."""
    import json

    from slipway.settings import settings_schema, settings_table

    if schema:
        print(json.dumps(settings_schema(), indent=2))
    elif table:
        print(settings_table(), end="")
    else:
        settings = load_settings(params)
        print(f"{params}: valid; model {settings.registry.model_name}, {len(settings.data.features)} features")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slipway", description="Workflow-orchestrated MLOps for tabular models.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub.add_parser("demo", parents=[common], help="the whole lifecycle on generated data")
    run = sub.add_parser("run", parents=[common], help="run one flow")
    run.add_argument("flow", help=f"one of: {', '.join(FLOWS)}")
    run.add_argument("assignments", nargs="*", metavar="NAME=VALUE", help="flow parameters")
    srv = sub.add_parser("serve", parents=[common], help="serve the scoring service for the current champion")
    srv.add_argument("--port", type=int, default=3000)
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs a token)")
    sub.add_parser("history", parents=[common], help="champion history and audited decisions")
    stack_up = sub.add_parser("up", parents=[common], help="start the local stack: Prefect, MLflow UI, service, deployments")
    stack_up.add_argument("--prefect-port", type=int, default=4200, help="when PREFECT_API_URL is not set (default 4200)")
    stack_up.add_argument("--mlflow-port", type=int, default=5000)
    stack_up.add_argument("--dashboard-port", type=int, default=8000, help="the Evidently UI (monitoring dashboard)")
    sub.add_parser("down", parents=[common], help="stop what 'slipway up' started")
    appr = sub.add_parser("approve", parents=[common], help=f"answer a paused promotion, signed with ${APPROVER_KEY_ENV}")
    appr.add_argument("run_id", help="the promotion's flow run id (in the approval alert and on its run page)")
    appr.add_argument("--approver", required=True, help="your name in promotion.approvers")
    appr.add_argument("--reject", action="store_true", help="reject the challenger (default: approve it)")
    appr.add_argument("--comment", required=True, help="why; recorded in the audit log")
    appr.add_argument("--sign-only", action="store_true", help="print the signature for the form in the Prefect UI")
    req = sub.add_parser("sign-request", parents=[common], help=f"sign a promotion request with ${APPROVER_KEY_ENV}")
    req.add_argument("--requested-by", required=True, help="your name in promotion.requester_keys or approver_keys")
    req.add_argument("--version", help="the version to promote (default: the challenger when the run starts)")
    cfg = sub.add_parser("config", parents=[common], help="check the params file, or print its schema or table")
    shown = cfg.add_mutually_exclusive_group()
    shown.add_argument("--schema", action="store_true", help="print the JSON schema of the params file")
    shown.add_argument("--table", action="store_true", help="print the README's table of settings")
    gen = sub.add_parser("generate", parents=[common], help="write the configured demo data")
    gen.add_argument("--output", help="where to write (default: data.source)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # NAME=VALUE words may also follow --params
    if extra and (args.command != "run" or any(word.startswith("-") for word in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.assignments = [*args.assignments, *extra]
    prepare_environment()
    try:
        if args.command == "demo":
            demo(args.params)
        elif args.command == "run":
            result = run_flow(args.flow, args.params, args.assignments)
            if getattr(result, "refused", False):
                return EXIT_REFUSED
        elif args.command == "history":
            history(args.params)
        elif args.command == "serve":
            serve(args.params, args.port, args.host)
        elif args.command == "up":
            stack_up(args.params, args.prefect_port, args.mlflow_port, args.dashboard_port)
        elif args.command == "down":
            from flows.stack import down

            stopped = down()
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        elif args.command == "approve":
            approve(args.params, args.run_id, args.approver, args.reject, args.comment, args.sign_only)
        elif args.command == "sign-request":
            print(sign_request(args.params, args.requested_by, args.version))
        elif args.command == "config":
            config(args.params, args.schema, args.table)
        else:
            generate(args.params, args.output)
    except (SettingsError, UsageError, UnknownFlowError) as exc:
        print(f"slipway: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Refused as exc:
        print(f"slipway: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as exc:  # noqa: BLE001 - one line on screen, the traceback in the error log
        where = _log_failure(argv, exc)
        if _is_data_error(exc):
            print(f"slipway: rejected: {exc}", file=sys.stderr)
            return EXIT_DATA
        print(f"slipway: {type(exc).__name__}: {exc}\n  (traceback in {where})", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
