"""Encoder-feature cache: the Whisper encoder is frozen, so its output for an audio file is computed once and reused
by every epoch and every curriculum stage.

One .npy file per (encoder, audio content, settings) under ROOT/<key[:2]>/<key>.npy. The key hashes the encoder
identity, the audio file's bytes and the settings (plus the storage dtype), so a changed encoder, file or setting never
reuses stale features. A training stage hashes each audio file once (`content_hashes`, on rank 0) and hands the digests
to every cache it builds (`hashes=`), so lookups neither re-read nor stat the audio. Writes go to a temporary file
renamed into place, so several processes (DDP ranks) may read and write the same cache at once; a damaged file is
recomputed. An entry of format 1, stored before features were checked finite, is read whole the first time it is met
(by has() or a lookup) and moved to its format-2 key if sound, deleted if not (`_adopt`).
"""

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..audio import DECODER_VERSION, WINDOW_SECONDS, load_audio
from ..errors import AudioError, LLMSRTError
from ..paths import atomic_file
from .packed import PackedMap

CACHE_FORMAT = 2  # bump when the file layout or key recipe changes (2: only finite features are stored)
UNCHECKED_FORMAT = 1  # entries stored before NaN and inf were refused: checked once when met, then moved to format 2
DTYPES = {"float16": np.float16, "float32": np.float32}  # storage precision
HASH_THREADS = 8  # files hashed at once by content_hashes (hashlib releases the GIL; the disk is the limit)
NPY_HEADER = 128  # bytes before the data in the .npy file of a 2-D array (format 1.0: magic, length, dict, padding)
DISK_BLOCK = 4096  # a file takes whole blocks of the disk
NPY_MAGIC = b"\x93NUMPY"  # then the format version (2 bytes), the header's length (2 bytes in 1.0, else 4), the header
NPY_LAYOUT = re.compile(rb"'descr': '[<>|=]?[fiu](?P<itemsize>\d+)', 'fortran_order': (?:True|False), "
                        rb"'shape': \((?P<rows>\d+), (?P<cols>\d+)\)")  # the header np.save writes for a 2-D array

# "path NUL size NUL mtime_ns" -> sha256 of the file's bytes; shared by every cache and stage of the process (a
# curriculum hashes its millions of clips once). Strings only: the collector never walks such a dict, so the DataLoader
# workers a training process forks share it instead of copying it (tuple keys were copied into each).
_content_hashes: dict[str, str] = {}

ComputeFn = Callable[[list[np.ndarray]], Sequence]  # loaded 16 kHz audio -> per-utterance (T, D) features


class FeatureCache:
    """get_or_compute(paths, fn) -> per-utterance (T, D) arrays, computed by fn only for cache misses.

    Features come back exactly as stored, in `dtype` (float16 by default: half the bytes a DataLoader worker hands
    over; the model widens them on its device), whether they were computed now or loaded, so a first epoch and a
    later one see the same numbers.
    """

    def __init__(self, root: str | Path, encoder_identity: str, settings: dict | None = None,
                 dtype: str = "float16", hashes: Mapping[str, str] | None = None,
                 log: Callable[[str], None] = print):
        if dtype not in DTYPES:
            raise LLMSRTError(f"feature cache dtype {dtype!r}: use one of {', '.join(DTYPES)}")
        self.root = Path(root)
        self.dtype = dtype
        try:
            # the decoder's version too: a cache filled before a decoder fix served the features of clips it now
            # refuses (an MP3 that decoded 6.5 s of its 20, paired with the whole transcript) as hits
            self._prefix, self._unchecked = (
                json.dumps({"format": fmt, "encoder": encoder_identity, "dtype": dtype,
                            "settings": dict(settings or {}), "decoder": DECODER_VERSION}, sort_keys=True)
                for fmt in (CACHE_FORMAT, UNCHECKED_FORMAT))
        except TypeError as e:
            raise LLMSRTError(f"feature cache settings must be JSON values ({e})") from None
        # audio path (as given) -> content hash, from content_hashes(); packed: a training stage's millions of
        # paths are shared by its DataLoader workers, not copied into each (llm_srt.data.packed)
        self.hashes = PackedMap(hashes or {})
        self.hits = 0
        self.misses = 0
        self.unstored = 0  # computed features the disk refused (full, read-only): handed back, not stored
        self.adopted = 0  # sound entries of UNCHECKED_FORMAT read whole and moved to the current format (`_adopt`)
        self.log = log

    def key(self, audio_path: str | Path) -> str:
        """The cache key of one audio file under this cache's encoder and settings."""
        return self._key_of(self._hash(audio_path))

    def _hash(self, audio_path: str | Path) -> str:
        return self.hashes.get(str(audio_path)) or content_hash(audio_path)

    def _key_of(self, audio_hash: str, prefix: str | None = None) -> str:
        digest = hashlib.sha256((prefix or self._prefix).encode("utf-8"))
        digest.update(audio_hash.encode("ascii"))
        return digest.hexdigest()

    def has(self, audio_path: str | Path) -> bool:
        """Whether features of this file are stored whole: its .npy file is as long as its header says. A file a
        crash left empty or cut short (features are written without fsync) counts as absent, so a pre-fill encodes
        it again rather than leaving it to the training steps. Costs one read of NPY_HEADER bytes beside the stat
        (every stored entry's numbers were checked finite before it was written); where it is absent, an entry of
        UNCHECKED_FORMAT is read whole and counts only if sound (one holding NaN or inf was reported as stored, so
        the pre-fill left it to be encoded, or refused, inside a training step)."""
        audio_hash = self._hash(audio_path)
        key = self._key_of(audio_hash)
        return _whole_npy(self.path_of(key)) or self._adopt(audio_hash, key) is not None

    def path_of(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def lookup(self, audio_paths: Sequence[str | Path]) -> list[np.ndarray | None]:
        """Stored features for each path, in order; None where absent or damaged (nothing is computed)."""
        hashes = [self._hash(p) for p in audio_paths]
        keys = [self._key_of(h) for h in hashes]
        found = self._load_many(keys, hashes)
        return [found.get(k) for k in keys]

    def get_or_compute(self, audio_paths: Sequence[str | Path], compute_fn: ComputeFn) -> list[np.ndarray]:
        """Features for each path, in order. `compute_fn` receives the loaded audio of the misses (one call)."""
        hashes = [self._hash(p) for p in audio_paths]
        keys = [self._key_of(h) for h in hashes]
        found = self._load_many(keys, hashes)
        missing = {k: p for k, p in zip(keys, audio_paths) if k not in found}
        if missing:
            # each file read once: its features are stored under the hash of the very bytes encoded, so a file
            # rewritten since it was hashed (a fill runs for hours) never puts its new audio under the old key
            audio, stored_as = [], {}
            for key, path in missing.items():
                data = _read(path)
                audio.append(load_audio(data, name=str(path), max_seconds=WINDOW_SECONDS))  # (the encoder's window:
                #   a clip a frame over it, a writer's off-by-one, is cut to it, as training without the cache does)
                stored_as[key] = self._key_of(hashlib.sha256(data).hexdigest())
            computed = list(compute_fn(audio))
            if len(computed) != len(audio):
                raise LLMSRTError(f"feature function returned {len(computed)} arrays for {len(audio)} utterances")
            for (key, path), feats in zip(missing.items(), computed):
                found[key] = self._store(stored_as[key], self._finite(_as_2d(feats, path), path))
                self.misses += 1
        return [found[k] for k in keys]

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}

    def stored_bytes(self, frames: int, dim: int) -> int:
        """Disk space that one stored (frames, dim) array takes: its .npy file in whole blocks."""
        size = NPY_HEADER + frames * dim * np.dtype(DTYPES[self.dtype]).itemsize
        return -(-size // DISK_BLOCK) * DISK_BLOCK

    def free_bytes(self) -> int:
        """Free space on the disk that holds the cache folder (or will: its nearest existing parent's)."""
        folder = self.root.absolute()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).free

    def _load_many(self, keys: Sequence[str], hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found = {}
        for key, audio_hash in dict(zip(keys, hashes)).items():
            cached = self._load(key)
            if cached is None:
                cached = self._adopt(audio_hash, key)
            if cached is not None:
                found[key] = cached
                self.hits += 1
        return found

    def _load(self, key: str) -> np.ndarray | None:
        path = self.path_of(key)
        try:
            feats = np.load(path, allow_pickle=False).astype(DTYPES[self.dtype], copy=False)
        except (OSError, ValueError, EOFError):
            return None  # absent, or damaged (e.g. a disk that filled up): recompute and overwrite
        except Exception:  # damaged otherwise: a header numpy cannot parse raises tokenize.TokenError (an unclosed
            return None  # bracket), which stopped the step, and a resumed run at the same batch, with a traceback
        # (T, D) with T >= 1 is what _store writes: another shape (a file changed outside the toolkit) is damaged too
        # (a 1-D one stopped the run unnamed; a (0, D) one trained its row on no speech at all)
        # and so is one holding NaN or inf (stored before _finite refused them): encoded again, or refused in one line
        return feats if feats.ndim == 2 and feats.shape[0] > 0 and _all_finite(feats) else None

    def _adopt(self, audio_hash: str, key: str) -> np.ndarray | None:
        """The features an UNCHECKED_FORMAT entry holds for this audio, moved to `key` where sound (what _load takes:
        all finite), deleted where not; None where there is none or it is not sound. Read whole once, when first
        met: a cache filled before NaN and inf were refused is neither encoded again nor trusted unread."""
        old_key = self._key_of(audio_hash, self._unchecked)
        old, feats = self.path_of(old_key), self._load(old_key)
        try:
            if feats is None:
                old.unlink(missing_ok=True)
            else:
                self.path_of(key).parent.mkdir(parents=True, exist_ok=True)
                os.replace(old, self.path_of(key))
        except OSError:  # another rank moved it first, a read-only folder: the features read are sound all the same
            pass
        self.adopted += feats is not None
        return feats

    def _finite(self, feats: np.ndarray, path) -> np.ndarray:
        """`feats` rounded to the cache's dtype (what `_store` writes) if finite; LLMSRTError naming the clip else.
        Stored, a NaN (an encoder overflowing under float16 autocast) or a value float16 makes inf was served to every
        later epoch and stage: the training stopped on a NaN loss, and again on each resume, told to lower the
        learning rate."""
        with np.errstate(over="ignore"):  # (said below, in words)
            stored = feats.astype(DTYPES[self.dtype])
        if _all_finite(stored):
            return stored
        if not _all_finite(feats):
            raise LLMSRTError(f"{path}: the encoder's features hold {int(np.size(feats) - np.isfinite(feats).sum())} "
                              "values that are NaN or inf: not stored in the feature cache; an encoder run in float16 "
                              "overflows (run the model in bfloat16 or float32), or its weights are damaged")
        raise LLMSRTError(f"{path}: the encoder's features reach {float(np.abs(feats).max()):.6g}, beyond the range of "
                          f"{self.dtype} ({float(np.finfo(DTYPES[self.dtype]).max):.6g}) the feature cache stores "
                          "them in: not stored; check the encoder (a Whisper encoder's last layer norm keeps them "
                          "far below it), or set data.feature_cache=null to train without the cache")

    def _store(self, key: str, stored: np.ndarray) -> np.ndarray:
        """Store the features, rounded to the cache's dtype (`_finite`), and return them. Where the disk refuses
        them (full, read-only, quota) they come back all the same, unstored, and computed again when next needed:
        a cache that filled its disk on day 3 slows the run down instead of stopping it."""
        path = self.path_of(key)
        try:
            with atomic_file(path, "wb") as f:
                np.save(f, stored, allow_pickle=False)
        except OSError as e:
            if self.unstored == 0:
                full = e.errno in (errno.ENOSPC, errno.EDQUOT)
                self.log(f"warning: {self.root}: cannot store encoder features ({e.strerror or e}); going on "
                         f"without storing them (each is encoded again when next needed): "
                         f"{'free space there' if full else 'fix the folder'} or set data.feature_cache to "
                         f"another folder, or to null (no cache)")
            self.unstored += 1
        return stored


def _all_finite(feats: np.ndarray) -> bool:
    """Whether no element is NaN or inf; for float16 from the exponent bits (~4x faster than np.isfinite)."""
    if feats.dtype == np.float16:
        return bool((feats.view(np.uint16) & 0x7FFF).max(initial=0) < 0x7C00)  # all ones in the exponent: inf or NaN
    return bool(np.isfinite(feats).all())


def _whole_npy(path: Path) -> bool:
    """Whether `path` is a .npy file of a 2-D array (what _store writes) no shorter than its header says (np.load
    takes a longer one, so has() does). Only the header is read, and parsed by NPY_LAYOUT: ~20 us a file against a
    stat's ~8 (numpy's own header reader, which evaluates it as Python, took ~250)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        head, size = os.read(fd, NPY_HEADER), os.fstat(fd).st_size
    except OSError:  # a folder where the file should be, a disk error: not stored, as far as a fill is concerned
        return False
    finally:
        os.close(fd)
    if len(head) < 12 or not head.startswith(NPY_MAGIC):
        return False
    data = 10 + int.from_bytes(head[8:10], "little") if head[6] == 1 else 12 + int.from_bytes(head[8:12], "little")
    layout = NPY_LAYOUT.search(head)
    return (layout is not None and int(layout["rows"]) > 0
            and size >= data + int(layout["rows"]) * int(layout["cols"]) * int(layout["itemsize"]))


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise AudioError(f"{path}: cannot read audio for the feature cache ({e.strerror or e})") from None


def content_hash(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) for the life of the process."""
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise LLMSRTError(f"{path}: cannot read audio for the feature cache ({e.strerror})") from None
    ident = f"{path}\0{st.st_size}\0{st.st_mtime_ns}"
    digest = _content_hashes.get(ident)
    if digest is None:
        digest = _content_hashes[ident] = _sha256(path)
    return digest


def content_hashes(paths: Sequence[str | Path], threads: int = HASH_THREADS) -> dict[str, str]:
    """content_hash of each distinct path (keys: the paths as given), several files at once."""
    distinct = list(dict.fromkeys(str(p) for p in paths))
    if len(distinct) < 2 or threads < 2:
        return {p: content_hash(p) for p in distinct}
    with ThreadPoolExecutor(min(threads, len(distinct))) as pool:
        return dict(zip(distinct, pool.map(content_hash, distinct)))


def _sha256(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise LLMSRTError(f"{os.path.abspath(path)}: cannot read audio for the feature cache ({e.strerror})") from None


def _as_2d(feats, path) -> np.ndarray:
    if hasattr(feats, "detach"):  # a torch tensor
        feats = feats.detach().float().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise LLMSRTError(f"feature function returned shape {feats.shape} for {path}; expected (T, D) with T > 0")
    return feats
