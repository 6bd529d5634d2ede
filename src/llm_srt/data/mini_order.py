"""The order in which the mini corpus (data/mini.py) fills its splits (test, then dev, then train): the same on every
machine for the sentences that machine has.

The order was a seeded shuffle of the sorted ids of the sentences installed, so one catalogue message more or less
reshuffled every split: a machine without PostgreSQL's catalogues (209 of the 773 sentences where the shipped
checkpoints were built) tested the demo on sentences they were trained on. REFERENCE now lists the ids of that
machine's sentences (`harvest` of the default languages) in the order its shuffle gave them. A sentence REFERENCE
lists keeps its rank (another seed shuffles the listed ids as before), and a sentence it does not list comes after
them, ordered by sha256 of "seed:id". So a missing sentence moves no other, and a machine with exactly the listed
sentences builds what it built before, byte for byte.

REFERENCE is the shipped checkpoints' split, so it is written again only when they are trained again, on the
machine whose catalogues they were trained from: `python -m llm_srt.data.mini_order [LOCALE_DIR]`.
"""

import hashlib
import random
import sys
from collections.abc import Iterable
from pathlib import Path

from ..errors import LLMSRTError

REFERENCE = Path(__file__).with_name("mini_order.txt")  # sentence ids, one a line, in seed 0's order
REFERENCE_SEED = 0  # the seed whose order REFERENCE is written in


def sentence_order(ids: Iterable[str], seed: int, reference: Path = REFERENCE) -> list[str]:
    """`ids` in split order: those `reference` lists by their rank in `reference_order(seed)`, then the others by
    sha256 of "seed:id"."""
    rank = {sid: k for k, sid in enumerate(reference_order(seed, reference))}
    ids = set(ids)
    listed = sorted((sid for sid in ids if sid in rank), key=rank.__getitem__)
    others = sorted((sid for sid in ids if sid not in rank),
                    key=lambda sid: hashlib.sha256(f"{seed}:{sid}".encode()).hexdigest())
    return listed + others


def reference_order(seed: int, reference: Path = REFERENCE) -> list[str]:
    """The listed ids in `seed`'s order: the file's order for REFERENCE_SEED, else the shuffle the builds before the
    file gave them (random.Random(seed) over the sorted ids)."""
    try:
        lines = Path(reference).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise LLMSRTError(f"{reference}: cannot read the mini corpus's split order ({e.strerror}); install the package "
                          "from a clone of the repository (make setup)") from None
    ids = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if seed != REFERENCE_SEED:
        ids.sort()
        random.Random(seed).shuffle(ids)
    return ids


def write_reference(locale_dir: Path, out: Path = REFERENCE) -> int:
    """Write `out`: the ids of the sentences `harvest` finds in `locale_dir` for the default languages, shuffled as
    the builds before REFERENCE were (random.Random(REFERENCE_SEED) over the sorted ids); the number of ids."""
    from .catalogues import harvest
    from .mini import DEFAULT_LANGS

    ids = sorted(harvest(list(DEFAULT_LANGS), Path(locale_dir)))
    random.Random(REFERENCE_SEED).shuffle(ids)
    header = [f"# the mini corpus's split order (llm_srt/data/mini_order.py): harvest({','.join(DEFAULT_LANGS)}) in "
              f"{locale_dir},",
              f"# shuffled by random.Random({REFERENCE_SEED}); python -m llm_srt.data.mini_order wrote it"]
    Path(out).write_text("\n".join([*header, *ids]) + "\n", encoding="utf-8")
    return len(ids)


if __name__ == "__main__":
    from .catalogues import LOCALE_DIR

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else LOCALE_DIR
    print(f"{REFERENCE}: {write_reference(folder)} sentence ids from {folder}")
