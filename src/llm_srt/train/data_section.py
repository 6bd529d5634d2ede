"""The data: section of a stage's config (train/config.py's TrainConfig.data): the manifests, the task mix, batches,
the feature cache, the dev set; what train/data.py's TrainingData reads and trains on."""

from dataclasses import dataclass, field
from typing import ClassVar

from ..config import bounds
from ..errors import ConfigError

NOT_A_FOLDER = ("false", "no", "off", "none", "n", "0")  # meant as "no cache", taken as text (the field holds a path)


@dataclass
class DataSection:
    train: list[str] | str = ""  # training manifest(s) (JSONL, llm-srt prepare); a list mixes several
    train_weights: list[float] | None = field(default=None, metadata=bounds(gt=0))  # sampling weight per train
    #   manifest (null: every row once)
    dev: str | None = None  # dev manifest for dev loss / dev scores
    tasks: dict[str, float] = field(default_factory=lambda: {"srt": 1.0}, metadata=bounds(gt=0))  # task -> share
    #   of examples
    batch_size: int = field(default=8, metadata=bounds(ge=1))  # examples per device per micro-batch
    num_workers: int | None = field(default=None, metadata=bounds(ge=0, le=256))  # DataLoader worker processes per
    #   rank; 0 = batches built in the training process; null = 2 on CUDA, 0 on the CPU (where the model's forward
    #   already takes every core)
    feature_cache: str | None = "auto"  # encoder-feature cache folder; "auto" = <cache>/features; null = off
    precompute_features: bool = True  # encode every utterance before step 1 (false: on first use, for short runs)
    dev_size: int = field(default=64, metadata=bounds(ge=0))  # dev examples for dev loss and the best checkpoint:
    #   spread evenly over directions (seeded)
    dev_decode: int = field(default=0, metadata=bounds(ge=0))  # dev examples decoded for a dev BLEU / WER sample at
    #   each eval (0 = off)
    skip_bad: bool = False  # skip bad manifest rows (with a count) instead of stopping
    seed: int = field(default=0, metadata=bounds(ge=0, le=2**32 - 1))  # data order and dev selection seed
    start_step: int = field(default=0, metadata=bounds(ge=0))  # the data stream begins this many optimizer steps in:
    #   a stage that goes on over the examples an earlier stage on the same data did not reach (a fresh start only)

    MOVED: ClassVar[dict[str, str]] = {
        "dev_examples": "write data.dev_size (the dev rows are now spread evenly over the directions, seeded)"}

    def __post_init__(self):
        if not self.tasks:
            raise ConfigError("data.tasks is empty; name the stage's tasks and their shares, e.g. {srt: 1.0}")
        if not isinstance(self.train, str) and (blank := [k for k, m in enumerate(self.train) if not str(m).strip()]):
            #   "data.train=[$CV, $FLEURS]" with one unset: pre-flight passed it, and it stopped after the model loaded
            raise ConfigError(f"data.train: entry {blank[0] + 1} of {len(self.train)} is empty (an unset shell "
                              "variable?); give the training manifest there, or drop the entry")
        if self.dev is not None and not self.dev.strip():  # "data.dev=$DEV" unset: no dev set, without a word
            raise ConfigError("data.dev is empty (an unset shell variable?); give the dev manifest, or write "
                              "data.dev=null to train without a dev set")
        if isinstance(self.feature_cache, str) and self.feature_cache.strip().lower() in ("", *NOT_A_FOLDER):
            where = "a folder of that name" if self.feature_cache.strip() else "the current folder (256 folders)"
            raise ConfigError(f"data.feature_cache: {self.feature_cache!r} would be {where}; write "
                              "data.feature_cache=null to run without a cache (or name its folder)")
        if self.train_weights is not None and len(self.train_weights) != len(self.manifests):
            raise ConfigError(f"data.train_weights has {len(self.train_weights)} weights for "
                              f"{len(self.manifests)} data.train manifests; give one weight per manifest")

    @property
    def main_task(self) -> str:
        """The task of the largest share: the one the dev set, the feature cache and the main manifest follow."""
        return max(self.tasks, key=self.tasks.get)

    @property
    def manifests(self) -> list[str]:
        """The training manifests as a list (`train` may name one as a string)."""
        return [self.train] if isinstance(self.train, str) else list(self.train)
