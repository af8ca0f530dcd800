"""Schemathesis against the served OpenAPI document: for an admin and a data holder, generated
requests to every operation (as the document allows them, and as it does not) get no 5xx, and every
answer is one the document lists, in the content type it states.

Path parameters of valid calls name what this file seeds (workspace "fuzz", account "fuzzy", source
"fuzzsrc", release people@1), so that they get past 404s without touching what the other tests'
workspaces hold. Hypothesis is derandomised and its example database off: a run is reproducible,
and a failure names its case.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS
from schemathesis.specs.openapi.checks import positive_data_acceptance

from enclave import accounts, sources, workspaces

from .conftest import PASSWORD

# Examples per operation, role and mode: a change to guard settings asks the operators' Python.
EXAMPLES = 25
PINNED = {"workspace": "fuzz", "username": "fuzzy", "source": "fuzzsrc", "release": "people@1", "role": "operator"}
ROLES = ("adam", "hana")


@pytest.fixture(scope="module")
def seeded(hub):
    s = hub.settings
    accounts.add_user(s, "fuzzy", ["operator"], PASSWORD)
    sources.set_holder(s, "fuzzsrc", "hana")
    workspaces.create(s, "fuzz", purpose="模糊测试", holder="hana")
    return hub


def cases(operation, mode: GenerationMode):
    if mode is GenerationMode.NEGATIVE:
        return operation.as_strategy(generation_mode=mode)
    names = {p.name for p in operation.path_parameters}
    path = {k: v for k, v in PINNED.items() if k in names}
    return st.just(path).flatmap(lambda p: operation.as_strategy(generation_mode=mode, path_parameters=p))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("role", ROLES)
def test_generated_calls_get_documented_answers(seeded, role, mode):
    hub = seeded
    schema = schemathesis.openapi.from_url(hub.base + "/openapi.json", timeout=30)
    auth = {"Authorization": f"token {hub.token(role, ['inherit'])}"}
    for result in schema.get_all_operations():
        operation = result.ok()
        # Whether a text is a sound declaration is beyond a JSON Schema: a schema-valid file may be
        # refused (422, with every problem named).
        checks = [c for c in CHECKS.get_all() if not (c is positive_data_acceptance and
                                                      (operation.method.upper(), operation.path) == ("POST", "/apply"))]

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=cases(operation, mode))
        def call(case):
            case.call_and_validate(base_url=hub.base, headers=auth, checks=checks, timeout=120)

        call()
