"""From a contract to a published release: validate, mask or synthesise, gate, publish.

Nothing reaches the store unless every step and every gate succeeds; the raw files are read,
hashed and never copied. Every attempt is logged on the holder's side (``release_log``).
"""

from __future__ import annotations

import getpass
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Literal, Protocol

from tqdm import tqdm

from . import analyses, gates, keys, lineage, masking, release_log, report, sources, store, synthesis
from enclave.i18n import N_

from .contract import AsWritten, Contract, ContractError, file_sha256, load_contract, load_tables, source_hashes

Method = Literal["masked", "synthetic"]

_LIBRARIES = ("pandas", "numpy", "pyarrow", "sdv", "sdmetrics", "anonymeter", "pycanon", "torch")


class HolderSettings(Protocol):
    """The locations a release needs (``enclave.settings.Settings`` has them all)."""

    @property
    def release_store(self) -> Path: ...

    @property
    def secrets_dir(self) -> Path: ...

    @property
    def holder_dir(self) -> Path: ...


@dataclass(frozen=True)
class Released:
    release: str
    manifest: dict
    registration: sources.Registration | None = None


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
    """Build ``<contract name>@<version>`` and publish it if every gate passes.

    The release is of the source the contract names: an unregistered source is registered with
    this contract, a new content of one of its files is recorded as a new file version, another
    contract file is a cut of it (``sources``). One release of a source is built at a time, so the
    composition check sees every earlier release.

    Every attempt that gets as far as building (published, refused by a gate, or failed in
    synthesis) is appended to the holder's release log; a refused one also leaves its report under
    ``holder_dir/refused/``. Bad contracts and data raise ``ContractError`` before any attempt.
    """
    contract_path = Path(contract_path)
    contract = contract or load_contract(contract_path)
    with sources.releasing(settings.holder_dir, contract.name):
        return _release(settings, contract_path, contract, method, by=by, version=version, progress=progress)


def _release(settings: HolderSettings, contract_path: Path, contract: Contract, method: Method, *,
             by: str | None, version: str | None, progress: bool) -> Released:
    timings: dict[str, float] = {}
    gate_timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(step: str) -> None:
        now = time.perf_counter()
        timings[step] = round(now - clock[0], 3)
        clock[0] = now

    base_dir = contract_path.parent
    raw = load_tables(contract, base_dir, source=str(contract_path))
    problems = analyses.check(contract, raw)
    if problems:  # the analyses' problems are in English only (synthetic/analyses.py)
        raise ContractError(str(contract_path), [AsWritten("contract.analysis", p) for p in problems])
    by = by or getpass.getuser()
    registration = sources.register(settings.holder_dir, contract.name, contract_path, by=by, contract=contract,
                                    rows={t: len(df) for t, df in raw.items()})
    hashes = source_hashes(contract, base_dir)
    # The version is fixed first: the release's own pseudonym key and row order derive from its name.
    version = version or store.next_version(settings.release_store, contract.name)
    name = store.new_release_name(settings.release_store, contract.name, version)
    key = keys.release_key(settings.secrets_dir, contract, name)
    lap("load")

    attempt = {
        "release": name, "source": contract.name, "method": method, "by": by,
        "contract": {"path": str(contract_path.resolve()), "sha256": file_sha256(contract_path)},
        "files": hashes,
        **({"seed": contract.synthesis.seed, "model": contract.synthesis.model} if method == "synthetic" else {}),
    }
    manifest: dict = {
        "release": name,
        "method": method,
        "generated": contract.generated,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "created_by": by,
        "source": {t: {"path": contract.tables[t].path, "sha256": h, "rows": len(raw[t])} for t, h in hashes.items()},
        "contract": _public_contract(contract),
        "pseudonym_key": {
            "name": contract.pseudonym_key or f"{name} (this release's own)",
            "location": "data holder's secrets folder (not in the release)",
        },
        "libraries": library_versions(),
    }
    context = {"contract": contract, "raw": raw, "key": key, "method": method, "release": name,
               "holder_dir": settings.holder_dir, "secrets_dir": settings.secrets_dir,
               "release_store": settings.release_store}

    if method == "masked":
        masked = masking.mask_tables(contract, raw, key, suppress=True, progress=progress)
        # Rows leave in an order drawn from the holder's secret, never the raw file's.
        released = {t: keys.shuffle(df, settings.secrets_dir, name, t) for t, df in masked.tables.items()}
        lap("mask")
        # The real rows at the release's granularity (nothing suppressed) are what declared analyses
        # compare with, and what explains a suppression refusal.
        results = gates.run(gates.MASKED_GATES, progress=progress, timings=gate_timings, released=released,
                            real=masked.before_suppression, **context)
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
        attempt["model"] = synth.name
        try:
            # GaussianCopula reports no progress of its own; CTGAN/TVAE/HMA/PAR add their bars inside.
            with tqdm(total=2, desc=f"synthesis ({synth.name})", unit="step", disable=not progress or None) as bar:
                synth.fit(train)
                bar.update()
                sampled = synth.sample({t: len(df) for t, df in prepared.tables.items()})
                bar.update()
        except synthesis.SynthesisError as exc:
            release_log.append(settings.holder_dir, attempt | {"outcome": "failed", "reason": str(exc)})
            exc.registration = registration
            raise
        # Gates judge the rows in the order sampled (their subsamples then depend on the contract's
        # seed alone); the release holds the same rows in an order drawn from the holder's secret.
        released = {t: sampled[t].reset_index(drop=True) for t in contract.tables}
        lap("synthesise")
        ctx = {"real": prepared.tables, "train": train, "holdout": holdout, "metadata": metadata}
        results = gates.run(gates.SYNTHETIC_GATES, progress=progress, timings=gate_timings, released=released,
                            real=prepared.tables, synth_ctx=ctx, **context)
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
    attempt["gates"] = manifest["gates"]
    try:
        gates.enforce(results)
    except gates.GateFailure as exc:
        # Nothing is published; the holder keeps what was measured and the report, on their side.
        exc.manifest = manifest
        exc.registration = registration
        exc.report = _refused_report(settings.holder_dir, manifest, real_for_report, released)
        release_log.append(settings.holder_dir, attempt | {"outcome": "refused", "report": str(exc.report)})
        raise
    if method == "synthetic":
        released = {t: keys.shuffle(df, settings.secrets_dir, name, t).reset_index(drop=True)
                    for t, df in released.items()}
    published = store.publish(
        settings.release_store, contract.name, released, manifest,
        lambda m: report.render(m, real_for_report, released), version=version,
    )
    manifest = store.manifest(settings.release_store, published)
    release_log.append(settings.holder_dir, attempt | {"outcome": "published",
                                                       "content_hash": manifest["content_hash"]})
    try:
        lineage.record_release(settings.holder_dir, published, contract, released, raw, manifest,
                               contract_path=contract_path, secrets_dir=settings.secrets_dir)
    except Exception as exc:
        # Later releases of the source are refused until this one has a lineage record (the
        # composition gate checks the store), so the gap cannot pass silently.
        raise sources.SourceError(
            "lineage.not_recorded",
            N_("%(release)s was published, but its lineage could not be recorded (%(problem)s); later releases of"
               " '%(source)s' are refused until it is"), release=published, problem=str(exc),
            source=contract.name) from exc
    return Released(published, manifest, registration)


def _refused_report(holder_dir: Path, manifest: dict, real, released) -> Path:
    """The holder's report of a refused release, beside the release log (never in the store)."""
    folder = Path(holder_dir) / "refused"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{manifest['release']}-{stamp}.html"
    tmp = path.with_suffix(".partial")
    tmp.write_text(report.render(manifest | {"refused": True}, real, released), encoding="utf-8")
    os.replace(tmp, path)
    return path
