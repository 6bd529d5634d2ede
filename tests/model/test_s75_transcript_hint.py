"""An SMT (or text MT) item without a transcript failed with "needs a transcript (--transcript)", translate's option,
also where evaluate ran it from a manifest row without one, which has no such option: the error names both."""

import numpy as np
import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.model.protocol import Item, check_item
from llm_srt.prompts import Task


@pytest.mark.parametrize("task", [Task.SMT, Task.MT])
def test_a_missing_transcript_names_the_option_and_the_manifest_field(task):
    audio = np.zeros(1600, dtype=np.float32) if task is Task.SMT else None
    with pytest.raises(LLMSRTError, match=rf"^task {task.value} needs a transcript \(translate's --transcript; an "
                                          r"evaluation manifest row's \"transcript\"\)$"):
        check_item(Item(audio, "eng", "deu", task, " "))
