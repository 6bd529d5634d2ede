"""`bench --paper-shape tiny --compiled-only` runs without --compile-batches (the tiny preset has a compiled batch of
its own, to rehearse the compiled path), while a paper shape, which has none, is refused: the help and the refusal
say which shapes have one, where they said --compile-batches was needed with any shape."""

import argparse
from types import SimpleNamespace

import pytest

from llm_srt import bench
from llm_srt.bench import paper
from llm_srt.errors import LLMSRTError


def test_compiled_only_needs_compile_batches_only_where_the_shape_has_no_compiled_batch_of_its_own():
    [own] = paper.TINY["compiled_batch_sizes"]
    args = SimpleNamespace(paper_shape="tiny", memory_gib=None, new_tokens=None, max_batch=None, batches_per_row=None,
                           no_train=False, compile_batches=None, compiled_only=True)
    assert bench.paper_options(args).compiled_batch_sizes == (own,)  # runs: tiny's own compiled row
    for shape in sorted(paper.presets.PRESETS.keys() - {"tiny"}):
        with pytest.raises(LLMSRTError, match=rf"there are none: --paper-shape {shape} has no compiled batch of its "
                                              rf"own \(tiny has batch {own}\): give --compile-batches"):
            bench.paper_options(SimpleNamespace(**{**vars(args), "paper_shape": shape}))
        assert bench.paper_options(SimpleNamespace(**{**vars(args), "paper_shape": shape, "compile_batches": "1,64"})
                                   ).compiled_batch_sizes == (1, 64)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    [help_text] = [a.help for a in parser._actions if "--compiled-only" in a.option_strings]
    assert help_text == (f"--paper-shape: only the compiled rows (--compile-batches'; tiny has batch {own} of its own, "
                         "the paper shapes none)")
