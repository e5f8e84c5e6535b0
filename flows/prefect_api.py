"""Calls to a Prefect server that other machines reach, behind its secret.

The secret is Prefect's basic-authentication string, `user:password`: its server checks it on
every API call when it has `server.api.auth_string`, and its clients send `api.auth_string`. Here
it comes from the environment (PREFECT_API_AUTH_STRING) or from a file only its owner can read;
never from a command-line argument, which `ps` shows to everyone on the machine; and it is
written nowhere: the processes that need it get it in their environment.
"""
from __future__ import annotations

import base64
import json
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

from flows.errors import UserError
from flows.llm.running import BackendError

ENV = "PREFECT_API_AUTH_STRING"  # what Prefect's own clients read
SERVER_ENV = "PREFECT_SERVER_API_AUTH_STRING"  # what its server checks against
HOW = f"export {ENV}=user:password, or give --auth-file FILE (readable only by you)"

# How long a flow run or a worker waits for an API that went away (a server restart) before it
# gives up: Prefect's client retries a call with a backoff of 2, 4, 8 ... 2**N seconds.
RETRIES_ENV = "PREFECT_CLIENT_MAX_RETRIES"
RETRIES = 7  # prefect.yaml's api_patience says the same for the flow runs of its deployments


def patience_s(retries: int) -> int:
    """Seconds Prefect's client keeps retrying a call before the error reaches its caller."""
    return 2 ** (retries + 1) - 2


def read_secret(auth_file: str | None) -> str | None:
    """The auth string from --auth-file, else from the environment; None if neither has one."""
    if auth_file:
        path = Path(auth_file)
        try:
            mode = path.stat().st_mode
            if not stat.S_ISREG(mode):
                raise UserError(f"--auth-file {path}: not a file")
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise UserError(f"--auth-file {path}: others can read it (mode {stat.S_IMODE(mode):o}); "
                                f"chmod 600 {path}")
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"--auth-file {path}: {exc.strerror.lower()}") from None
        where = f"--auth-file {path}"
    else:
        secret, where = os.environ.get(ENV, "").strip(), ENV
        if not secret:
            return None
    user, colon, password = secret.partition(":")
    if not (user and colon and password):
        raise UserError(f"{where}: the secret is user:password (Prefect's basic authentication)")
    return secret


def api_post(api: str, path: str, body: dict, secret: str | None, timeout: float = 10.0):
    """POST to a Prefect API (with the secret, as Prefect's clients send it); the JSON answer.
    A refusal or an unreachable server is one line for the user."""
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode("utf-8")).decode("ascii")
    request = urllib.request.Request(f"{api.rstrip('/')}{path}", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            problem = "refused the secret" if secret else "needs a secret"
            raise UserError(f"the Prefect API at {api} {problem} (HTTP 401): {HOW}") from None
        raise BackendError(f"the Prefect API at {api} answered HTTP {exc.code}; is PREFECT_API_URL its /api URL?"
                           ) from None
    except OSError as exc:  # urllib's URLError included: refused, DNS, timeout
        reason = getattr(exc, "reason", exc)
        raise BackendError(f"the Prefect API at {api} is unreachable ({reason})") from None


def check_api(api: str, secret: str | None) -> None:
    """One authenticated call, so that a wrong URL or secret is one line before a worker starts
    rather than a worker that retries forever."""
    api_post(api, "/work_pools/filter", {"limit": 1}, secret)


def deployment_names(api: str, secret: str | None) -> list[str]:
    """Every deployment on the server, as `prefect deployment run` takes it: flow/deployment."""
    flows = {f["id"]: f["name"] for f in api_post(api, "/flows/filter", {}, secret)}
    return sorted(f"{flows[d['flow_id']]}/{d['name']}" for d in api_post(api, "/deployments/filter", {}, secret))
