"""Checksummed ``.npz`` files: every file diffjax caches or converts (FID statistics and
reference features, FID-Inception and LPIPS weights) is written atomically with a
``<path>.sha256`` side file, and read back only if it still matches, so a corrupt or stale file
raises instead of silently changing a metric."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import numpy as np

__all__ = ["sha256_file", "save_npz_with_checksum", "expected_sha256", "verify_sha256"]


def sha256_file(path) -> str:
    """Hex sha256 of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_npz_with_checksum(path, arrays: Mapping[str, np.ndarray]) -> str:
    """Write ``arrays`` to ``path`` (through a temporary file and a rename, so an interrupted
    write never leaves a truncated file under the name) and the digest to ``path + '.sha256'``.
    Returns the digest."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"  # np.savez appends .npz to names without it
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    digest = sha256_file(path)
    with open(path + ".sha256", "w") as f:
        f.write(digest + "\n")
    return digest


def expected_sha256(path, sha256: str | None = None) -> str | None:
    """The digest ``path`` must have: ``sha256`` if given, else its ``.sha256`` side file's, else
    None (nothing to check)."""
    if sha256 is not None:
        return sha256
    side = os.fspath(path) + ".sha256"
    if os.path.exists(side):
        with open(side) as f:
            return f.read().strip()
    return None


def verify_sha256(path, sha256: str | None = None, what: str = "", hint: str = "") -> None:
    """Raise ``ValueError`` naming ``path`` if it does not match :func:`expected_sha256`."""
    expected = expected_sha256(path, sha256)
    if expected is None:
        return
    got = sha256_file(path)
    if got != expected:
        raise ValueError(f"checksum mismatch for {what + ' ' if what else ''}{os.fspath(path)!r}: "
                         f"expected {expected}, got {got}{'; ' + hint if hint else ''}")
