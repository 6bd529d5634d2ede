"""`llm-srt evaluate`'s command-line options, for `run.main` (cli.py finds them as `run.add_arguments`)."""

from .. import device
from ..arguments import StoreOnce
from ..model.decoding import add_compile_argument, add_no_repeat_argument, add_srt_tags_argument
from .comet import DEFAULT_MODEL
from .models import MT_PROMPTS
from .significance import SAMPLES


ONE_MANIFEST = ("evaluate scores one test manifest (its report pools rows by language pair alone, whatever file they "
                "came from); run it once per manifest, each into its own --out, or join them into one manifest (ids "
                "distinct; a relative audio path is read from the manifest's folder)")


def add_arguments(parser) -> None:
    """`llm-srt evaluate`'s options (`run.main` reads them). Every option that takes one value (the shared --device,
    --beam ... too) is a `StoreOnce` (cli's parser makes it one): given twice with two values, refused, where argparse
    kept the last one."""
    from ..infer import MAX_NEW_TOKENS, MAX_NEW_TOKENS_HELP
    from .run import TASKS  # (run imports this module)

    parser.add_argument("--model", action="append", required=True,
                        help="NAME=FOLDER, a model folder, 'whisper' or 'cascade', or NAME=FILE.jsonl: the results "
                             "(hyps.NAME.jsonl) of an earlier evaluation, scored again without decoding (several "
                             "files, comma-separated: one per training run, pooled and tested run by run); repeat "
                             "to compare systems (the first is the one the others are tested against)")
    parser.add_argument("--manifest", default=None, action=StoreOnce, why=ONE_MANIFEST,
                        help="test manifest (JSONL), one file; not needed when every --model is a results file")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--task", default="auto", choices=TASKS,
                        help="auto: what the model folder was trained for (an SMT-stage folder: asr+smt); smt: the "
                             "gold transcript in (Table 6); asr: every clip transcribed once; asr+smt: the model's "
                             "own transcript, then its SMT (the paper's w/o SRT ablation)")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help=MAX_NEW_TOKENS_HELP)
    add_srt_tags_argument(parser)
    add_no_repeat_argument(parser)
    add_compile_argument(parser)
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N manifest rows (of a results file: its rows among them; without a "
                             "manifest, its first N rows)")
    parser.add_argument("--with-mt", action="store_true",
                        help="also score each system's own LLM translating the gold transcripts (Figure 3)")
    parser.add_argument("--mt-prompt", default="auto", choices=MT_PROMPTS,
                        help="--with-mt's prompt for a model folder: tags (its own MT prompt: the transcript and "
                             "language tags), instruction (a translation instruction, as to a plain LLM), auto (the "
                             "instruction without LoRA: its LLM is the frozen base LLM; the tags with LoRA)")
    parser.add_argument("--whisper", default=None, help="Whisper folder of the whisper and cascade baselines "
                                                        "(default: the embedded Whisper)")
    parser.add_argument("--llm", default=None, help="LLM folder of the cascade and mt baselines (default: the "
                                                    "embedded LLM); a model folder runs on the LLM it names (or "
                                                    "--model-llm)")
    parser.add_argument("--encoder", default=None,
                        help="Whisper encoder folder of every model folder to run, instead of the one its config.json "
                             "names (a model folder moved to another machine; translate's --encoder)")
    parser.add_argument("--model-llm", default=None,
                        help="LLM folder of every model folder to run, instead of the one its config.json names (a "
                             "model folder moved to another machine; translate's --llm); not the baselines' (--llm)")
    parser.add_argument("--significance", type=int, default=SAMPLES, metavar="N",
                        help="with several systems: paired bootstrap of each against the first (BLEU; "
                             "transcript WER/CER per language), N resamples (0: none)")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad manifest rows instead of stopping")
    parser.add_argument("--restart", action="store_true",
                        help="decode every row again (by default a run into an --out that a killed run left goes "
                             "on from the rows it decoded: OUT/partial)")
    parser.add_argument("--comet", nargs="?", const=DEFAULT_MODEL, default=None, metavar="MODEL",
                        help=f"also score COMET (default model {DEFAULT_MODEL}; or a COMET model folder or "
                             "checkpoint file); runs in its own Python: `llm-srt setup --comet` makes it")
    parser.add_argument("--comet-python", default=None,
                        help="the Python with unbabel-comet (default: $LLM_SRT_COMET_PYTHON, else the setup's)")
    parser.add_argument("--comet-batch-size", type=int, default=16)
    parser.add_argument("--comet-gpus", type=int, default=None,
                        help="0: COMET on the CPU; 1: on one GPU (default: the GPU of --device cuda:N; 0 with "
                             "--device cpu; else 1 when its torch sees CUDA, else 0); more is refused: COMET's "
                             "multi-GPU scoring cannot return its scores under torch >= 2.6")
    device.add_arguments(parser)
