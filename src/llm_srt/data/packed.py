"""Millions of small values kept as one byte buffer and its offsets, not as Python objects.

A DataLoader worker forks from the training process. The Python objects it inherits (rows, strings, the tuples
holding them) are copied into it page by page as the cyclic garbage collector and reference counts write to them, so
every worker of every rank ends up with its own copy of the whole training set's rows (measured: 117 MiB a worker
per 200,000 Row objects alone, 1.9 GB at the paper's 3.3M ASR rows; with their audio hashes, 70 MiB per 100,000 rows,
2.3 GB: README). Numpy arrays of bytes are never written after they are built, so the workers share them.

    values = PackedList(["a", ("b", 1.5)])      # any picklable values; values[i] unpickles one (microseconds)
    hashes = PackedMap({"x.wav": "9f86...", ...})  # str -> str, looked up by the keys' sorted 64-bit digests
"""

import bisect
import hashlib
import pickle
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np


class _Chunks:
    """Byte strings, one after another in one buffer (built in place: no list of millions of small bytes objects)."""

    def __init__(self, chunks: Iterable[bytes] = (), joined: bytes | None = None, lengths: np.ndarray | None = None):
        """From `chunks`, or from all of them `joined` and their `lengths`."""
        if joined is None:
            buffer, ends = bytearray(), array("q")
            for chunk in chunks:
                buffer += chunk
                ends.append(len(buffer))
            ends = np.frombuffer(ends, dtype=np.int64) if ends else np.zeros(0, np.int64)
        else:
            buffer, ends = joined, np.cumsum(lengths, dtype=np.int64)
        self.offsets = np.zeros(len(ends) + 1, dtype=np.int64)
        self.offsets[1:] = ends
        self.buffer = np.frombuffer(buffer, dtype=np.uint8) if len(buffer) else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> memoryview:
        return memoryview(self.buffer[self.offsets[i]:self.offsets[i + 1]])

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes + self.offsets.nbytes


class PackedList(Sequence):
    """A read-only list of picklable values in one buffer; `encode`/`decode` may map each value to what is pickled
    (e.g. a dataclass to the tuple of its fields) and back."""

    def __init__(self, values: Iterable):
        self._chunks = _Chunks(pickle.dumps(self.encode(v), pickle.HIGHEST_PROTOCOL) for v in values)

    def encode(self, value):
        return value

    def decode(self, value):
        return value

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {i} of {n} values")
        return self.decode(pickle.loads(self._chunks[i % n]))

    @property
    def nbytes(self) -> int:
        """The bytes the values take."""
        return self._chunks.nbytes


class _Strings(Sequence):
    def __init__(self, strings: Iterable[str]):
        strings = list(strings)
        joined = "".join(strings)
        if joined.isascii():  # paths and hex digests: one encode, a byte a character
            self._chunks = _Chunks(joined=joined.encode("ascii"),
                                   lengths=np.fromiter(map(len, strings), dtype=np.int64, count=len(strings)))
        else:
            self._chunks = _Chunks(s.encode("utf-8", "surrogatepass") for s in strings)

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, i: int) -> str:
        return str(self._chunks[i], "utf-8", "surrogatepass")


class PackedMap(Mapping):
    """A read-only str -> str mapping in three arrays: the keys' 64-bit digests sorted, and the keys and values in
    that order (a lookup is a binary search over the digests and one key compared: microseconds at millions of keys;
    a bisection over the keys themselves decoded twenty strings a lookup)."""

    def __init__(self, items: Mapping[str, str]):
        keys = list(items)
        digests = np.fromiter((_digest(k) for k in keys), dtype=np.uint64, count=len(keys))
        order = np.argsort(digests, kind="stable").tolist()
        self._digests = digests[order]
        self._keys = _Strings(keys[i] for i in order)
        self._values = _Strings(items[keys[i]] for i in order)

    def _find(self, key) -> int | None:
        if not isinstance(key, str):
            return None
        digest, digests = _digest(key), memoryview(self._digests)  # Python ints: no numpy call per lookup
        i = bisect.bisect_left(digests, digest)
        while i < len(digests) and digests[i] == digest:  # keys of one digest, if ever: compared
            if self._keys[i] == key:
                return i
            i += 1
        return None

    def __getitem__(self, key: str) -> str:
        i = self._find(key)
        if i is None:
            raise KeyError(key)
        return self._values[i]

    def __contains__(self, key) -> bool:
        return self._find(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        return self._digests.nbytes + self._keys._chunks.nbytes + self._values._chunks.nbytes


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
