"""Command-line pieces the verbs share: `StoreOnce`, argparse's plain store that refuses an option given twice with
two values, and `store_once(parser)`, which makes it the store of every single-valued option of a parser (cli's
`Parser` applies it to every verb's and sub-verb's)."""

import argparse


class StoreOnce(argparse.Action):
    """argparse's plain store, but the option given again with another value is refused (one line, through the
    parser's error), where argparse kept the last one unsaid. The same value again overrides nothing and is taken.
    `why`: what to do instead, said after the refusal."""

    def __init__(self, option_strings, dest, why: str = "give it once", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_once", {})  # this parse's values, by dest (not a default)
        if self.dest in given and given[self.dest] != values:
            raise argparse.ArgumentError(self, f"given twice ({given[self.dest]}, then {values}): {self.why}")
        given[self.dest] = values
        setattr(namespace, self.dest, values)


def store_once(parser: argparse.ArgumentParser) -> None:
    """Every option added to `parser` from here on without an action (or with action="store") is a `StoreOnce`,
    those that helpers of other modules add too (--device, --beam ...); append, store_true and the like are
    untouched (they repeat, or switch, by design)."""
    for name in (None, "store"):  # argparse's names of its plain store (None: no action= given)
        parser.register("action", name, StoreOnce)
