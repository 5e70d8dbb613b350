"""Create the production profile's MLflow accounts; run once after the server's first start.

- ``slipway``: the flows' account. Train registers versions; promote, rollback, guard and
  switch move aliases and write the signed decision and routing. A registered model it
  creates is its own (MANAGE); no other account but the admin may change it.
- ``scoring``: the scoring service's and the batch workers' account. It reads only: the
  server gives every account READ by default (``default_permission`` in ``start.sh``).

The admin signs in with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``; the
accounts' passwords come from ``SLIPWAY_MLFLOW_FLOWS_PASSWORD`` and
``SLIPWAY_MLFLOW_SCORING_PASSWORD``. Idempotent: an account that exists gets the password given.

    python infra/mlflow/accounts.py   # with MLFLOW_TRACKING_URI set
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import RestException
from mlflow.server.auth.client import AuthServiceClient

ACCOUNTS = {"slipway": "SLIPWAY_MLFLOW_FLOWS_PASSWORD", "scoring": "SLIPWAY_MLFLOW_SCORING_PASSWORD"}


def ensure_accounts(tracking_uri: str, passwords: dict[str, str]) -> list[str]:
    """Create each account, or reset its password; returns the accounts created."""
    client = AuthServiceClient(tracking_uri)
    created = []
    for user, password in passwords.items():
        try:
            client.create_user(user, password)
            created.append(user)
        except RestException:  # it exists already: make its password the one given
            client.update_user_password(user, password)
    return created


def main() -> int:
    missing = [v for v in ("MLFLOW_TRACKING_URI", *ACCOUNTS.values()) if not os.environ.get(v)]
    if missing:
        print(f"accounts.py: set {', '.join(missing)}", file=sys.stderr)
        return 2
    created = ensure_accounts(os.environ["MLFLOW_TRACKING_URI"], {u: os.environ[v] for u, v in ACCOUNTS.items()})
    print(f"MLflow accounts ready: {', '.join(ACCOUNTS)} (created now: {', '.join(created) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
