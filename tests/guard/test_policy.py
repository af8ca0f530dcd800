"""The guard's per-workspace settings: bad input is refused with a message naming the key.

``policy.py`` is pure Python, so it is loaded straight from the package source (the package itself
lives in the operator's environment, not in the hub's).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "extensions" / "enclave_guard" / "enclave_guard" / "policy.py"
_spec = importlib.util.spec_from_file_location("enclave_guard_policy", SOURCE)
policy = importlib.util.module_from_spec(_spec)
sys.modules["enclave_guard_policy"] = policy
_spec.loader.exec_module(policy)


def test_defaults_when_the_workspace_sets_nothing():
    s = policy.parse_guard_settings(None)
    assert s == policy.GuardSettings()
    assert s.output_cell_max_bytes == 2048 * 1024 and s.acro.safe_threshold == 10
    assert s.output_connection_max_bytes == 512 * 1024


def test_values_within_bounds_are_taken():
    s = policy.parse_guard_settings({"upload_max_mb": 2, "output_cell_max_kb": 4096, "acro": {"safe_threshold": 5},
                                     "output_connection_max_kb": 128})
    assert s.upload_max_bytes == 2 * 1024 * 1024 and s.acro.safe_threshold == 5
    assert s.output_connection_max_bytes == 128 * 1024


@pytest.mark.parametrize("raw, message", [
    ({"terminal": True}, "unknown guard setting(s): terminal"),
    ({"terminals": "yes"}, "guard setting 'terminals' must be bool"),
    ({"terminals": 1}, "guard setting 'terminals' must be bool"),
    ({"upload_max_mb": 500}, "'upload_max_mb' must be within"),
    ({"output_cell_max_kb": "2048"}, "'output_cell_max_kb' must be int"),
    ({"read_max_mb": True}, "'read_max_mb' must be float"),
    ({"output_message_max_kb": 4096, "output_cell_max_kb": 1024}, "exceeds 'output_cell_max_kb'"),
    ({"output_connection_max_kb": 16}, "'output_connection_max_kb' must be within [64, 16384]"),
    ({"output_connection_max_kb": 512.0}, "'output_connection_max_kb' must be int"),
    ({"acro": {"safe_treshold": 3}}, "acro.safe_treshold"),
    ({"acro": {"safe_nk_k": "high"}}, "'acro.safe_nk_k' must be float"),
])
def test_bad_settings_name_the_problem(raw, message):
    with pytest.raises(policy.GuardSettingsError, match=None) as exc:
        policy.parse_guard_settings(raw)
    assert message in str(exc.value)


def test_workspace_file_problems_are_named(tmp_path):
    with pytest.raises(policy.GuardSettingsError, match="does not exist"):
        policy.load_workspace(tmp_path / "missing.json")
    bad = tmp_path / "workspace.json"
    bad.write_text(json.dumps({"user": "alice", "releases": "r1"}))
    with pytest.raises(policy.GuardSettingsError, match="'workspace' must be a non-empty string"):
        policy.load_workspace(bad)
    bad.write_text("{not json")
    with pytest.raises(policy.GuardSettingsError, match="cannot read workspace file"):
        policy.load_workspace(bad)


def test_disabled_plugins_are_real_jupyterlab_4_6_ids():
    """Each ID (or package) must exist in the installed JupyterLab: a wrong one silently does nothing."""
    static = Path(__file__).resolve().parents[2] / ".venv-sandbox" / "share" / "jupyter" / "lab" / "static"
    bundle = "".join(p.read_text(errors="replace") for p in static.glob("*.js"))
    for plugin in policy.DISABLED_LAB_PLUGINS:
        assert f'"{plugin}' in bundle, plugin
