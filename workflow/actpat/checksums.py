"""Checksums of bytes and files, in one format each: CRC-32C (Castagnoli) as an integer, sha256 as
hex digits.

CRC-32C guards against damage: every file of a store (its inventory, ``actpat.store``) and every
file of a prepared checkpoint (``actpat.models``) is recorded with its size and CRC-32C, which
catches any flipped bit, any burst of up to 32 flipped bits and any truncation, at a fraction of a
cryptographic hash's cost (``benchmarks/checksum_cost.py``, ``benchmarks/load_cost.py``). sha256
is a checkpoint's identity, named in every result made from it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import google_crc32c

BLOCK = 1 << 24  # bytes read at a time: a checkpoint's weights are hundreds of megabytes


def crc32c(data: bytes) -> int:
    return google_crc32c.value(bytes(data))


def file_crc32c(path: Path, block: int = BLOCK) -> int:
    """A file's CRC-32C, read in blocks."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            checksum.update(chunk)
    return int.from_bytes(checksum.digest(), "big")


def file_sha256(path: Path, block: int = BLOCK) -> str:
    """A file's sha256, hex digits, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()
