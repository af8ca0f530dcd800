"""The lineage of masked releases, on the holder's side (never mounted): which raw row each
released row is, for the composition check. Sources and release records: :mod:`synthetic.sources`.

**Lineage.** After a release is published, :func:`record_release` keeps, per released row of a
masked release and in release order: its row id, its entity id and its equivalence class over the
release's quasi-identifiers (with the quasi-identifier values themselves). Ids are 64-bit keyed
BLAKE2b MACs under the holder's lineage key (derived from the holder's secret in ``secrets/``),
of normalised values (trimmed, case-folded text, as pseudonyms are), so no raw key is
stored. A row has up to three ids and two releases join on the first kind both have:

* ``row_pk``: of the table's primary key value (stable across file versions);
* ``row_entity``: of the entity value plus the row's occurrence number among that entity's rows in
  file order (stable while an entity's rows keep their order);
* ``row_number``: the raw row number, valid only between releases of the same file content
  (``fingerprint``), never across file versions.

A row's entity is its ``entity_column`` value, else its primary key value, else the row itself.
Synthetic releases are listed in lineage but not row-linked: their rows are not raw rows.

The layout under ``holder_dir`` is in :mod:`synthetic.sources`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from enclave.i18n import N_

from .contract import Contract, file_sha256
from .sources import SourceError, _lineage_dir, _source_path, _split, _write_json, locked, source

ROW_KINDS = ("row_pk", "row_entity", "row_number")


# -- row and entity ids ----------------------------------------------------------------------------


def lineage_key(holder_dir: Path, secrets_dir: Path | None = None) -> bytes:
    """The holder's lineage key: derived from the holder's secret, used for nothing else.

    ``secrets_dir`` defaults to ``secrets`` beside ``holder_dir`` (``Settings`` puts both under
    ``$ENCLAVE_HOME``)."""
    from .keys import holder_secret

    secrets_dir = Path(secrets_dir) if secrets_dir else Path(holder_dir).parent / "secrets"
    return hmac.new(holder_secret(secrets_dir), b"lineage row ids", "sha256").digest()


def _value_ids(key: bytes, values: pd.Series) -> np.ndarray:
    """A 64-bit keyed BLAKE2b (a MAC, twice as fast as HMAC-SHA256 here) of each distinct value,
    normalised like pseudonyms; empty values get 0."""
    codes, uniques = pd.factorize(values)
    normalised = pd.Series(uniques, dtype=object).astype(str).str.strip().str.casefold()
    mac = hashlib.blake2b
    digests = b"".join([mac(v.encode("utf-8"), key=key, digest_size=8, person=b"enclave-lineage").digest()
                        for v in normalised])
    ids = np.append(np.frombuffer(digests, dtype=">i8").astype(np.int64), np.int64(0))
    return ids[codes]  # code -1 (empty) -> the last slot


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 64-bit mix of two int64 arrays (splitmix64's finaliser over a ^ b*golden)."""
    with np.errstate(over="ignore"):
        x = a.astype(np.uint64) ^ (b.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x.view(np.int64)


def fingerprint(raw: pd.DataFrame) -> str:
    """A hash of a raw table's typed content: row numbers join only between equal fingerprints."""
    h = hashlib.sha256(",".join(map(str, raw.columns)).encode())
    h.update(pd.util.hash_pandas_object(raw, index=True).to_numpy().tobytes())
    return h.hexdigest()


def row_identities(contract: Contract, table: str, raw: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """Ids of every raw row (indexed like ``raw``): ``entity`` and the row ids (module docstring)."""
    t = contract.tables[table]
    number = np.arange(len(raw), dtype=np.int64)
    out = pd.DataFrame({"row_number": number}, index=raw.index)
    ids = {c: _value_ids(key, raw[c]) for c in {t.primary_key, t.entity_column} - {None}}
    if t.primary_key:
        out["row_pk"] = ids[t.primary_key]
    entity_column = t.entity_column or t.primary_key
    if t.entity_column and raw[t.entity_column].notna().all():  # else it identifies no row
        values = raw[t.entity_column]
        occurrence = values.groupby(values, sort=False).cumcount().to_numpy(dtype=np.int64)
        out["row_entity"] = _mix(ids[t.entity_column], occurrence + 1)
    if entity_column:
        entity = ids[entity_column]
        empty = raw[entity_column].isna().to_numpy()
        # A row without an entity value is an entity of its own.
        out["entity"] = np.where(empty, _mix(number, np.full(len(raw), -1, dtype=np.int64)), entity)
    else:
        out["entity"] = _mix(number, np.full(len(raw), -2, dtype=np.int64))
    return out


def class_codes(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One int64 per row, equal for rows equal on ``columns`` (empty values are a value)."""
    codes = np.zeros(len(df), dtype=np.int64)
    for col in columns:
        col_codes, uniques = pd.factorize(df[col], use_na_sentinel=False)
        codes, _ = pd.factorize(codes * (len(uniques) + 1) + col_codes)
    return codes.astype(np.int64)


def released_rows(contract: Contract, table: str, released: pd.DataFrame, raw: pd.DataFrame,
                  key: bytes, values: bool = True) -> pd.DataFrame:
    """Per released row (release order): its ids, its class over the quasi-identifiers and (with
    ``values``) the quasi-identifiers' released values (``qi.<column>``)."""
    position = raw.index.get_indexer(released.index)
    if (position < 0).any():
        raise ValueError(f"table '{table}': released rows must keep their raw row index (lineage joins on it)")
    ids = row_identities(contract, table, raw, key).iloc[position].reset_index(drop=True)
    qis = [c for c in contract.tables[table].quasi_identifiers() if c in released.columns]
    ids["class"] = class_codes(released, qis)
    for c in qis if values else ():
        ids[f"qi.{c}"] = released[c].reset_index(drop=True)
    return ids


# -- lineage of releases ---------------------------------------------------------------------------


def record_release(
    holder_dir: Path,
    release: str,
    contract: Contract,
    released: dict[str, pd.DataFrame],
    raw: dict[str, pd.DataFrame],
    manifest: dict,
    *,
    contract_path: Path | None = None,
    secrets_dir: Path | None = None,
) -> Path:
    """Keep a published release's lineage; return its folder.

    ``released`` must still be indexed by raw row number (masked releases); ``secrets_dir`` as for
    :func:`lineage_key`.
    """
    name, version = _split(release)
    method = manifest["method"]
    folder = _lineage_dir(holder_dir, release)
    tables: dict[str, dict] = {}
    frames: dict[str, pd.DataFrame] = {}
    key = lineage_key(holder_dir, secrets_dir) if method == "masked" else b""
    for tname, t in contract.tables.items():
        info = {"rows": len(released[tname]), "file_sha256": manifest["source"][tname]["sha256"],
                "quasi_identifiers": [c for c in t.quasi_identifiers() if c in released[tname].columns],
                "entity_column": t.entity_column or t.primary_key}
        if method == "masked":
            frames[tname] = released_rows(contract, tname, released[tname], raw[tname], key)
            info["fingerprint"] = fingerprint(raw[tname])
            info["row_ids"] = [k for k in ROW_KINDS if k in frames[tname].columns]
        tables[tname] = info
    src = None
    with contextlib.suppress(SourceError):
        src = source(holder_dir, name)
    path = str(Path(contract_path).resolve()) if contract_path else None
    record = {
        "release": release, "source": name, "version": version, "method": method,
        "row_linked": method == "masked",
        "created_at": manifest.get("created_at"), "created_by": manifest.get("created_by"),
        "content_hash": manifest.get("content_hash"),
        "contract": {
            "path": path,
            "sha256": file_sha256(Path(contract_path)) if contract_path else None,
            "canonical_sha256": hashlib.sha256(
                json.dumps(manifest.get("contract"), sort_keys=True).encode()).hexdigest(),
            "cut": bool(src and path and src.contract != path),
        },
        "files": {t: info["file_sha256"] for t, info in tables.items()},
        "k": contract.privacy.k,
        "tables": tables,
        "composition": [g for g in manifest.get("gates", []) if g.get("gate") == "composition_k"],
    }
    with locked(holder_dir):
        if folder.exists():
            raise SourceError("lineage.recorded", N_("lineage of %(release)s is already recorded (%(folder)s)"),
                              release=release, folder=str(folder))
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{version}.", suffix=".partial"))
        try:
            for tname, frame in frames.items():
                frame.to_parquet(tmp / f"{tname}.parquet", index=False)
            _write_json(tmp / "release.json", record)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if src is not None:  # rows of file versions registered before they were read
            changed = False
            for tname, sha in record["files"].items():
                for v in src.files.get(tname, []):
                    if v.sha256 == sha and v.rows is None:
                        v.rows, changed = len(raw[tname]), True
            if changed:
                _write_json(_source_path(holder_dir, name), src.as_dict())
    return folder


def rows(holder_dir: Path, release: str, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The row lineage of ``table`` in a masked ``release``."""
    return pd.read_parquet(_lineage_dir(holder_dir, release) / f"{table}.parquet", columns=columns)
