"""Near-duplicate detection of instruction texts: normalisation, character shingles, MinHash
and LSH banding, and the Jaccard that decides (flows/splits.py applies it to the splits).

Near duplicates are found with MinHash + LSH banding (16 bands x 4) and confirmed by the Jaccard
of the shingle sets (as CRC-32 ids; on the strings themselves near the threshold). The MinHash is
one-permutation hashing with rotation densification (Li, Owen and Zhang 2012; Shrivastava and Li
2014): one hash per shingle spread over 64 bins instead of 64 salted hashes per shingle, which
keeps pure Python at about 2 s for 24k candidate rows and well under a minute for 100k.

Texts compared at scale keep their shingle ids and normalised text out of memory in a
`TextFile`, read back by class when a Jaccard needs them.
"""
from __future__ import annotations

import os
import sys
import tempfile
import unicodedata
import zlib
from array import array
from functools import cache
from pathlib import Path
from typing import Callable

SHINGLE = 5  # characters per shingle
NUM_BINS = 64  # MinHash signature length
BANDS, ROWS_PER_BAND = 16, 4  # LSH: P(candidate) = 1 - (1 - J^4)^16: 0.9998 at J=0.8, 0.12 at J=0.3
BORDER = 0.02  # Jaccard this close to the threshold is recomputed on shingle strings, not ids
_BIN_BITS = 6  # log2(NUM_BINS)
_VALUE_BITS = 64 - _BIN_BITS
_VALUE_MASK = (1 << _VALUE_BITS) - 1
_M64 = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads a 32-bit hash over the top bits
_EMPTY = 1 << 64  # above every value: marks an empty bin


@cache
def _punctuation_table() -> dict[int, str]:
    """Every Unicode punctuation code point (categories P*) -> a space."""
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "P"}


def normalise_instruction(text: str) -> str:
    """NFKC, casefold, punctuation removed (as a word break), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_punctuation_table())
    return " ".join(text.split())


def shingles(norm: str) -> set[str]:
    if len(norm) <= SHINGLE:
        return {norm} if norm else set()
    return {norm[i:i + SHINGLE] for i in range(len(norm) - SHINGLE + 1)}


def jaccard(a: set, b) -> float:
    inter = len(a.intersection(b))
    return inter / (len(a) + len(b) - inter)


def signature(ids: set[int]) -> list[int]:
    """One-permutation MinHash: each shingle's hash picks a bin by its top bits and competes for
    that bin's minimum by the rest; empty bins borrow the next filled bin's value (rotation)."""
    sig = [_EMPTY] * NUM_BINS
    for h in ids:
        x = (h + 1) * _MIX & _M64
        b, v = x >> _VALUE_BITS, x & _VALUE_MASK
        if v < sig[b]:
            sig[b] = v
    for i in range(NUM_BINS):
        if sig[i] == _EMPTY:
            for d in range(1, NUM_BINS):
                v = sig[(i + d) % NUM_BINS]
                if v <= _VALUE_MASK:  # a filled bin, not itself borrowed
                    sig[i] = v + d * (1 << _VALUE_BITS)  # offset by the distance, as in densification
                    break
    return sig


def band_keys(sig: list[int]) -> list[int]:
    # hash() of a tuple of ints is deterministic across runs (only str/bytes hashing is salted);
    # a rare collision only adds a candidate, which the Jaccard check then rejects.
    r = ROWS_PER_BAND
    return [hash((b, *sig[b * r:(b + 1) * r])) for b in range(BANDS)]


def shingle_ids(shingles: set[str]) -> set[int]:
    """Shingles as 4-byte ids (CRC-32): what MinHash and the first Jaccard check use."""
    crc = zlib.crc32
    return {crc(s.encode("utf-8")) for s in shingles}


def similarity(ids_a: set[int], ids_b, threshold: float, norms: Callable[[], tuple[str, str]]) -> float:
    """The Jaccard that decides a near duplicate: of the shingle ids, or within BORDER of the
    threshold (where a CRC collision could tip it) of the shingle strings of the two `norms()`."""
    j = jaccard(ids_a, ids_b)
    if abs(j - threshold) < BORDER:
        norm_a, norm_b = norms()
        j = jaccard(shingles(norm_a), shingles(norm_b))
    return j


class TextFile:
    """The shingle ids and normalised text of each text class, appended to an unnamed temporary
    file and read back by class when a Jaccard needs them: in memory, 16 bytes a class."""

    def __init__(self, directory: str | Path | None = None):
        self._file = tempfile.TemporaryFile(dir=directory)
        self._offsets = array("q")
        self._n_ids = array("i")
        self._n_bytes = array("i")  # of the normalised text, UTF-8
        self._end = 0

    def append(self, ids: set[int], norm: str) -> None:
        data, text = array("I", ids).tobytes(), norm.encode("utf-8")
        self._file.write(data + text)
        self._offsets.append(self._end)
        self._n_ids.append(len(ids))
        self._n_bytes.append(len(text))
        self._end += len(data) + len(text)

    def size(self, c: int) -> int:
        """How many shingle ids class c has (in memory: no read)."""
        return self._n_ids[c]

    def ids(self, c: int) -> array:
        out = array("I")
        out.frombytes(os.pread(self._file.fileno(), 4 * self._n_ids[c], self._offsets[c]))
        return out

    def norm(self, c: int) -> str:
        at = self._offsets[c] + 4 * self._n_ids[c]
        return os.pread(self._file.fileno(), self._n_bytes[c], at).decode("utf-8")

    def flush(self) -> None:  # before the first read
        self._file.flush()

    def close(self) -> None:
        self._file.close()
