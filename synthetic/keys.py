"""The data holder's secrets behind one release: its pseudonym key and the order of its rows.

* **Pseudonym key.** By default every release has a key of its own, derived from the holder's
  secret and the release's name (``residents@3``): two releases of one source then share no
  pseudonym and no date offset, so they cannot be joined on them. A contract naming a key
  (``pseudonym_key: panel``) uses ``secrets/pseudonym-panel.key``, shared by every release naming
  it: those releases join on purpose (the composition check assumes any two releases can be
  aligned, so it counts that join either way).
* **Row order.** Every released table is shuffled by a permutation seeded from the holder's
  secret, the release and the table, so a release never keeps the raw file's order (a table
  sorted by person id would otherwise give away which pseudonym is which id).

The holder's secret (``secrets/holder.key``, 32 random bytes, 0600) never leaves the holder's side.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import numpy as np
import pandas as pd

from . import masking
from .contract import Contract

HOLDER_SECRET = "holder"  # secrets/pseudonym-holder.key is never a contract's key: see release_key


def holder_secret(secrets_dir: Path) -> bytes:
    """The data holder's own secret, created on first use."""
    return masking.load_or_create_key(secrets_dir, HOLDER_SECRET)


def _derive(secrets_dir: Path, label: str, *parts: str) -> bytes:
    message = "\0".join((label, *parts)).encode("utf-8")
    return hmac.new(holder_secret(secrets_dir), message, "sha256").digest()


def release_key(secrets_dir: Path, contract: Contract, release: str) -> bytes:
    """The pseudonym (and date-offset) key of ``release`` (``name@version``)."""
    if contract.pseudonym_key is not None:
        if contract.pseudonym_key == HOLDER_SECRET:
            raise masking.PseudonymKeyError(
                f"pseudonym_key '{HOLDER_SECRET}' is reserved for the data holder's own secret; name another"
            )
        return masking.load_or_create_key(secrets_dir, contract.pseudonym_key)
    return _derive(secrets_dir, "release pseudonym key", release)


def shuffle(df: pd.DataFrame, secrets_dir: Path, release: str, table: str) -> pd.DataFrame:
    """``df``'s rows in an order drawn from the holder's secret; the index (raw row numbers of a
    masked table) travels with each row, for gates that compare a released row with its raw row."""
    seed = int.from_bytes(_derive(secrets_dir, "row order", release, table)[:16], "big")
    return df.iloc[np.random.default_rng(seed).permutation(len(df))]
