"""Fixtures for the data holder's side: a fresh Enclave home per test, generated datasets once."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.settings import load_settings
from synthetic import demo

@pytest.fixture
def settings(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ENCLAVE_HOME", str(home))
    monkeypatch.setenv("ENCLAVE_CONFIG", str(home / "enclave.toml"))
    return load_settings()


@pytest.fixture(scope="session")
def residents_dir(tmp_path_factory) -> Path:
    """1,000 GENERATED residents (CSV) and their contract."""
    folder = tmp_path_factory.mktemp("residents")
    demo.write_residents(folder, n=1000)
    return folder


@pytest.fixture(scope="session")
def enterprises_dir(tmp_path_factory) -> Path:
    """GENERATED enterprises (Parquet) with their tax filings (CSV), and their contract."""
    folder = tmp_path_factory.mktemp("enterprises")
    demo.write_enterprises(folder, n=400)
    return folder


@pytest.fixture(scope="session")
def pycanon():
    """pycanon (installed by the Makefile without its exact pins: requirements/no-deps/data.txt)."""
    import pycanon

    return pycanon


@pytest.fixture
def store_listing(settings):
    """Everything under the release store, hidden (partial) entries included."""

    def listing() -> list[str]:
        store = settings.release_store
        return sorted(str(p.relative_to(store)) for p in store.rglob("*")) if store.exists() else []

    return listing
