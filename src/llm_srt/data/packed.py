"""Millions of small values kept as one byte buffer and its offsets, not as Python objects.

A DataLoader worker forks from the training process. The Python objects it inherits (rows, strings, the tuples
holding them) are copied into it page by page as the cyclic garbage collector and reference counts write to them, so
every worker of every rank ends up with its own copy of the whole training set's rows (measured: 117 MiB a worker
per 200,000 Row objects, 1.9 GB at the paper's 3.3M ASR rows). Numpy arrays of bytes are never written after they
are built, so the workers share them.

    values = PackedList(["a", ("b", 1.5)])      # any picklable values; values[i] unpickles one (microseconds)
    hashes = PackedMap({"x.wav": "9f86...", ...})  # str -> str, looked up by bisection over the sorted keys
"""

import bisect
import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np


class _Chunks:
    """Byte strings, one after another in one buffer."""

    def __init__(self, chunks: list[bytes]):
        self.offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in chunks], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(chunks), dtype=np.uint8)

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
        self._chunks = _Chunks([pickle.dumps(self.encode(v), pickle.HIGHEST_PROTOCOL) for v in values])

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
        self._chunks = _Chunks([s.encode("utf-8", "surrogatepass") for s in strings])

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, i: int) -> str:
        return str(self._chunks[i], "utf-8", "surrogatepass")


class PackedMap(Mapping):
    """A read-only str -> str mapping in two buffers (the keys sorted, and the values in their order)."""

    def __init__(self, items: Mapping[str, str]):
        keys = sorted(items)
        self._keys, self._values = _Strings(keys), _Strings(items[k] for k in keys)

    def _find(self, key) -> int | None:
        if not isinstance(key, str):
            return None
        i = bisect.bisect_left(self._keys, key)
        return i if i < len(self._keys) and self._keys[i] == key else None

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
        return self._keys._chunks.nbytes + self._values._chunks.nbytes

