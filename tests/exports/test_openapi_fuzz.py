"""Schemathesis against the served OpenAPI document: for each role, generated requests to every
operation (as the document allows them, and as it does not) get no 5xx, and every answer is one the
document lists, in the content type it states.

The fuzzing runs in a workspace of its own ("fuzz", where olga requests and rita reviews) on
requests it seeds, so that path parameters name requests and files that exist and the generated
calls get past 404s, without touching what other tests' workspaces hold. Hypothesis is
derandomised and its example database off: a run is reproducible, and a failure names its case.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from enclave import workspaces

from .conftest import Client
from .test_api import approve_all, submit, vote

WORKSPACE = "fuzz"
# Examples per operation, role and mode (valid and invalid input): the file runs in a few minutes
# per backend on two cores.
EXAMPLES = 50
UPLOADS = {("POST", "/requests"), ("POST", "/checks"), ("POST", "/requests/{request_id}/files"),
           ("POST", "/sealed-runs")}
# Operations whose valid-looking input the service may still refuse with 400 for rules a schema
# cannot state: what files contain and whether the manifest (a sealed run's request field) matches
# them (uploads), which transitions need a written reason, and that refusing a sealed run does. The
# other checks apply to them all the same.
CONTENT_RULES = UPLOADS | {("POST", "/requests/{request_id}/transitions"), ("POST", "/sealed-runs/{run_id}/decision")}
ROLES = {
    "operator's server token": "olga@fuzz",
    "reviewer": "rita",
    "admin": "adam",
    "operator's user token": "olga",
}


class Seeded:
    """A hub with the fuzz workspace, tokens for its roles, and requests in several states."""

    def __init__(self, hub) -> None:
        workspaces.create(hub.settings, WORKSPACE)
        workspaces.add_member(hub.settings, WORKSPACE, "olga", "operator")
        workspaces.add_member(hub.settings, WORKSPACE, "rita", "reviewer")
        workspaces.add_member(hub.settings, WORKSPACE, "rob", "reviewer")
        self.hub = hub
        self.tokens = {name: hub.user_token(name) for name in ("olga", "rita", "rob", "adam")}
        self.tokens["olga@fuzz"] = hub.server_token("olga", WORKSPACE)
        client = self.client
        submitted = submit(client, self.tokens["olga@fuzz"])
        returned = submit(client, self.tokens["olga@fuzz"])
        for who in ("rita", "rob"):
            r = vote(client, self.tokens[who], returned["id"], returned["files"][0]["id"], "request_changes", "say more")
        assert r.json()["state"] == "returned"
        released = submit(client, self.tokens["olga@fuzz"])
        assert approve_all(client, self.tokens, released)["state"] == "released"
        self.files = [(r["id"], f["id"]) for r in (submitted, returned, released) for f in r["files"]]

    def client(self, token: str) -> Client:
        return Client(token, self.hub.service + "/api")


@pytest.fixture(scope="module", params=["hub", "pg_hub"])
def seeded(request) -> Seeded:
    """The package's hubs, SQLite and PostgreSQL, each seeded once."""
    return Seeded(request.getfixturevalue(request.param))


def cases(operation, files: list[tuple[str, int]], mode: GenerationMode):
    """Generated calls of ``operation`` whose path parameters name seeded requests and files (in the
    invalid mode, schemathesis's own values: those must be refused)."""
    if mode is GenerationMode.NEGATIVE:
        return operation.as_strategy(generation_mode=mode)
    names = {p.name for p in operation.path_parameters}
    pinned = st.sampled_from(files).map(lambda ids: {k: v for k, v in (
        ("request_id", ids[0]), ("file_id", ids[1]), ("workspace", WORKSPACE)) if k in names})
    return pinned.flatmap(lambda path: operation.as_strategy(generation_mode=mode, path_parameters=path))


def _leaves_out_the_token(case) -> bool:
    """A negative case made invalid by leaving out the Authorization header. The harness sends the
    role's token with every call, so the call that goes out may well be valid: refusing it is not
    owed (every other check still applies to it)."""
    data = case.meta.phase.data if case.meta is not None else None
    mutated = {getattr(data, "parameter", None)} | {m.parameter for m in getattr(data, "mutations", None) or []}
    return "Authorization" in mutated


def rejects_negative_data(ctx, response, case):
    """schemathesis's negative_data_rejection, but for cases whose invalid part the harness overrides."""
    if _leaves_out_the_token(case):
        return None
    return negative_data_rejection(ctx, response, case)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("role", ROLES)
def test_generated_calls_get_documented_answers(seeded, role, mode):
    hub = seeded.hub
    schema = schemathesis.openapi.from_url(f"{hub.service}/api/openapi.json", timeout=30)
    auth = {"Authorization": f"token {seeded.tokens[ROLES[role]]}"}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = (operation.method.upper(), operation.path)
        # In a multipart body every field is text: a field schemathesis makes "the wrong type" (an
        # object for the title) arrives as text, "{}", which is a valid title. Invalid uploads are
        # still sent, and must get documented answers and no 5xx.
        checks = [rejects_negative_data if c is negative_data_rejection else c for c in CHECKS.get_all()
                  if not (c is positive_data_acceptance and label in CONTENT_RULES
                          or c is negative_data_rejection and label in UPLOADS)]

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=cases(operation, seeded.files, mode))
        def call(case):
            case.call_and_validate(base_url=f"{hub.service}/api", headers=auth, checks=checks, timeout=60)

        call()
