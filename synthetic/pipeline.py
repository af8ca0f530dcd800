"""From a contract to a published release: validate, mask or synthesise, gate, publish.

Nothing reaches the store unless every step and every gate succeeds; the raw files are read,
hashed and never copied.
"""

from __future__ import annotations

import getpass
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Literal, Protocol

from tqdm import tqdm

from . import gates, masking, report, store, synthesis
from .contract import Contract, load_contract, load_tables, source_hashes

Method = Literal["masked", "synthetic"]

_LIBRARIES = ("pandas", "numpy", "pyarrow", "sdv", "sdmetrics", "anonymeter", "pycanon", "torch")


class HolderSettings(Protocol):
    """The two locations a release needs (``enclave.settings.Settings`` has both)."""

    @property
    def release_store(self) -> Path: ...

    @property
    def secrets_dir(self) -> Path: ...


@dataclass(frozen=True)
class Released:
    release: str
    manifest: dict


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            out[lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


def _public_contract(contract: Contract) -> dict:
    return contract.model_dump(mode="json")


def release(
    settings: HolderSettings,
    contract_path: Path,
    method: Method,
    *,
    by: str | None = None,
    version: str | None = None,
    progress: bool = True,
    contract: Contract | None = None,
) -> Released:
    timings: dict[str, float] = {}
    gate_timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(step: str) -> None:
        now = time.perf_counter()
        timings[step] = round(now - clock[0], 3)
        clock[0] = now

    contract_path = Path(contract_path)
    contract = contract or load_contract(contract_path)
    base_dir = contract_path.parent
    raw = load_tables(contract, base_dir, source=str(contract_path))
    hashes = source_hashes(contract, base_dir)
    key = masking.load_or_create_key(settings.secrets_dir, contract.pseudonym_key)
    lap("load")

    manifest: dict = {
        "method": method,
        "generated": contract.generated,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "created_by": by or getpass.getuser(),
        "source": {t: {"path": contract.tables[t].path, "sha256": h, "rows": len(raw[t])} for t, h in hashes.items()},
        "contract": _public_contract(contract),
        "pseudonym_key": {"name": contract.pseudonym_key, "location": "data holder's secrets folder (not in the release)"},
        "libraries": library_versions(),
    }

    if method == "masked":
        masked = masking.mask_tables(contract, raw, key, suppress=True, progress=progress)
        released = masked.tables
        lap("mask")
        results = gates.run(gates.MASKED_GATES, progress=progress, timings=gate_timings, released=released,
                            contract=contract, raw=raw, key=key, method=method)
        manifest["parameters"] = {"k": contract.privacy.k, "l": contract.privacy.l,
                                  "max_suppressed": contract.privacy.max_suppressed}
        manifest["masking"] = {t: asdict(r) for t, r in masked.reports.items()}
        real_for_report = raw
    else:
        prepared_masked = masking.mask_tables(contract, raw, key, suppress=False, progress=progress)
        prepared = synthesis.prepare(contract, prepared_masked.tables)
        train, holdout = synthesis.split_holdout(contract, prepared.tables, contract.synthesis.seed)
        metadata = synthesis.build_metadata(contract, prepared.tables)
        lap("mask")
        synth = synthesis.SDVSynthesiser(contract, metadata)
        # GaussianCopula reports no progress of its own; CTGAN/TVAE/HMA add their bars inside.
        with tqdm(total=2, desc=f"synthesis ({synth.name})", unit="step", disable=not progress or None) as bar:
            synth.fit(train)
            bar.update()
            released = synth.sample({t: len(df) for t, df in prepared.tables.items()})
            bar.update()
        released = {t: released[t].reset_index(drop=True) for t in contract.tables}
        lap("synthesise")
        ctx = {"real": prepared.tables, "train": train, "holdout": holdout, "metadata": metadata}
        results = gates.run(gates.SYNTHETIC_GATES, progress=progress, timings=gate_timings, released=released,
                            contract=contract, raw=raw, key=key, method=method, synth_ctx=ctx)
        manifest["parameters"] = {
            **contract.synthesis.model_dump(mode="json"), "model": synth.name,
            "training_rows": {t: len(d) for t, d in train.items()},
            "holdout_rows": {t: len(d) for t, d in holdout.items()},
            "dropped_before_synthesis": prepared.dropped,
        }
        real_for_report = prepared.tables

    lap("gates")
    manifest["gates"] = [r.as_dict() for r in results]
    manifest["timings_s"] = timings | {"per_gate": gate_timings}
    try:
        gates.enforce(results)
    except gates.GateFailure as exc:
        exc.manifest = manifest  # what was measured, for the caller to show; nothing is published
        raise
    name = store.publish(
        settings.release_store, contract.name, released, manifest,
        lambda m: report.render(m, real_for_report, released), version=version,
    )
    return Released(name, store.manifest(settings.release_store, name))

