"""A system's rows decoded in fixed groups, each batch's results kept in the system's journal (evaluate/journal.py)
as it ends, so that a killed evaluation goes on where it stopped and batches every row as an uninterrupted run
does."""

from typing import Callable

from ..data.manifest import Row
from .journal import MISSING, Journal, audio_state, group_digests
from .report import UtteranceResult


class ByBatch:
    """Rows done (`add(k, result)`), handed on together (`on_rows`) as their batch ends: `infer.run_items` calls
    `progress` once every output of a batch is out (`ended` wraps it), and the caller `flush`es at the end. A stop
    within a batch's hand-over keeps none of its rows, so a resume runs them in that batch again."""

    def __init__(self, on_rows: Callable[[list[tuple[int, UtteranceResult]]], object] | None):
        self.on_rows, self.done = on_rows, []

    def add(self, k: int, result: UtteranceResult) -> None:
        if self.on_rows is not None:
            self.done.append((k, result))

    def ended(self, progress: Callable[[int], object]) -> Callable[[int], object]:
        return lambda n: (self.flush(), progress(n))

    def flush(self) -> None:
        done, self.done = self.done, []
        if done:
            self.on_rows(done)


def decode_in_groups(journal: Journal, rows: list[Row], size: int,
                     decode: Callable[[list[Row], Callable[[int, bool], object],
                                       Callable[[list[tuple[int, UtteranceResult]]], object]], list[UtteranceResult]],
                     stop: Callable[[], bool] = lambda: False) -> bool:
    """`rows` run through `decode` `size` at a time, in order, each batch's results kept in `journal` as it ends, so
    a Ctrl-C or SIGTERM within a group keeps the rows decoded before it (kept a group at a time, they were lost). Of a
    group a stop cut short, the rows the journal does not keep run; a group that ran to its end with rows to run
    again (failed) runs whole; one whose every row is kept, not at all. Whether every group ran: False where `stop()`
    said to stop before one (another torchrun rank failed: `rank_failed`). Fixed groups: a run that goes on from a
    killed one batches every row as an uninterrupted run does (a row's output may depend on its batch): the rest of a
    cut group too, as its first batches were kept whole and run first (longest first, within one window of
    `infer.FINISH_WINDOW_SECONDS` of audio). `decode(group, unread, done)` calls `done([(k, result), ...])` as a batch
    of the group's rows ends (`ByBatch`), and `unread(k, by_content)` before it for a row that failed before any batch
    (`run_system`): where it fails the same way while its audio file stays as it was before the group ran
    (`_same_each_time`: the file missing, an SMT clip over the window), the journal keeps it with that state until the
    file changes (an unreadable file may be a passing error: run again). A row `done` did not get is journaled from
    what `decode` returns."""
    for whole in groups(rows, size):
        left = journal.left(whole)
        if not left:
            continue
        if stop():
            return False
        key = group_digests(whole, journal.base)  # the group a row was decoded in, whichever of its rows ran now
        group = [whole[k] for k in left]
        states = [audio_state(row.audio) for row in group]
        unread: dict[int, bool] = {}  # row k of the group -> whether it failed by its content
        written: set[int] = set()

        def done(batch: list[tuple[int, UtteranceResult]]) -> None:
            journal.write([(group[k], result, key, states[k] if k in unread and _same_each_time(states[k], unread[k])
                            else None) for k, result in sorted(batch, key=lambda b: b[0]) if k not in written])
            written.update(k for k, _ in batch)

        done(list(enumerate(decode(group, unread.__setitem__, done))))
    return True


def _same_each_time(state: str, by_content: bool) -> bool:
    """Whether a row that failed before any batch fails the same way while its audio file stays as it is (`state`):
    its file missing, or a failure by its content (`by_content`: an SMT clip over the window); not an unreadable
    file, which may be a network disk's passing error."""
    return state == MISSING or (by_content and not state.startswith("unreachable"))


def kept_rows(journal: Journal, rows: list[Row], size: int) -> int:
    """How many of `rows` `decode_in_groups` will not run again."""
    return sum(len(group) - len(journal.left(group)) for group in groups(rows, size))


def groups(rows: list[Row], size: int) -> list[list[Row]]:
    """`rows` in order, `size` at a time (the last group may be shorter)."""
    return [rows[start:start + size] for start in range(0, len(rows), size)]
