"""A system's rows decoded in fixed groups, each group's results kept in the system's journal (evaluate/journal.py)
as it finishes, so that a killed evaluation goes on where it stopped and batches every row as an uninterrupted run
does."""

from typing import Callable

from ..data.manifest import Row
from .journal import MISSING, Journal, audio_state, group_digests
from .report import UtteranceResult


def decode_in_groups(journal: Journal, rows: list[Row], size: int,
                     decode: Callable[[list[Row], Callable[[int, bool], object]], list[UtteranceResult]],
                     stop: Callable[[], bool] = lambda: False) -> bool:
    """`rows` run through `decode` `size` at a time, in order, each group's results kept in `journal` as it
    finishes; a group whose every row the journal kept already is not run again. Whether every group ran: False where
    `stop()` said to stop before one (another torchrun rank failed: `rank_failed`). Fixed groups: a run that goes on
    from a killed one batches every row as an uninterrupted run does (a row's output may depend on its batch).
    `decode(group, unread)` calls `unread(k, by_content)` for row k of the group that failed before any batch
    (`run_system`):
    where it fails the same way while its audio file stays as it was before the group ran (`_same_each_time`: the file
    missing, an SMT clip over the window), the journal keeps it with that state until the file changes (an unreadable
    file may be a passing error: run again)."""
    for group in groups(rows, size):
        if not journal.kept(group):
            if stop():
                return False
            key = group_digests(group, journal.base)
            states = [audio_state(row.audio) for row in group]
            unread: dict[int, bool] = {}  # row k of the group -> whether it failed by its content
            for k, (row, result) in enumerate(zip(group, decode(group, unread.__setitem__))):
                journal.append(row, result, key, states[k] if k in unread and _same_each_time(states[k], unread[k])
                               else None)
    return True


def _same_each_time(state: str, by_content: bool) -> bool:
    """Whether a row that failed before any batch fails the same way while its audio file stays as it is (`state`):
    its file missing, or a failure by its content (`by_content`: an SMT clip over the window); not an unreadable
    file, which may be a network disk's passing error."""
    return state == MISSING or (by_content and not state.startswith("unreachable"))


def kept_rows(journal: Journal, rows: list[Row], size: int) -> int:
    """How many of `rows` `decode_in_groups` will not run again."""
    return sum(len(group) for group in groups(rows, size) if journal.kept(group))


def groups(rows: list[Row], size: int) -> list[list[Row]]:
    """`rows` in order, `size` at a time (the last group may be shorter)."""
    return [rows[start:start + size] for start in range(0, len(rows), size)]
