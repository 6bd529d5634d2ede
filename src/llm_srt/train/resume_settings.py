"""What a resume must match: this run's settings (train/resume.py's `run_settings`) against those the newest
checkpoint stored, checked by rank 0 before any model is built (train/recipe.py's `find_resume`)."""

from ..errors import ConfigError
from . import checkpoint, resume
from .config import TrainConfig
from .final import dev_set


def check_settings(cfg: TrainConfig, world: int, latest: checkpoint.CheckpointInfo | None,
                   log) -> tuple[dict, tuple[str | None, str | None]]:
    """This run's settings, and the start final/'s INIT_RECORD records (the folder the trained weights grew from and
    its weights' identity), where `latest` (the checkpoint resumed from, if any) allows them: a change of the
    trained weights' shapes is refused, any other change without allow_changes; allowed ones are said in the log,
    as is a cache or dev set that changed since."""
    settings = resume.run_settings(cfg, world)
    saved = checkpoint.stored_settings(latest.path) if latest is not None else None
    changed = resume.changes(saved, settings, cfg.model.init_from) if saved is not None else []
    if changed and (shaping := resume.shape_changes(saved, settings)):
        how = (f"start another output_dir with model.init_from={latest.path} to train on from its weights"
               if resume.carries_over(shaping) else "start another output_dir from the previous stage's folder (the "
               "trained weights cannot carry over to these shapes)")
        raise ConfigError(f"{latest.path}: resuming with settings that change the shapes of the trained weights: "
                          f"{resume.listed(shaping)}; no resume can take these (allow_changes=true neither). Set them "
                          f"back, or {how}")
    if changed and not cfg.allow_changes:
        go_on = ("add model.init_from=null allow_changes=true to go on with the new ones (the checkpoint holds "
                 "every trained weight; a start that is not there cannot load)" if cfg.model.init_from
                 and settings[resume.INIT_KEY] is None else "add allow_changes=true to go on with the new ones")
        raise ConfigError(f"{latest.path}: resuming with settings that differ from the checkpoint's: "
                          f"{resume.listed(changed)}. Set them back, or {go_on}, or choose another output_dir")
    if changed:
        log(f"[{cfg.stage}] resuming with changed settings (allow_changes): {'; '.join(changed)}")
    start = (cfg.model.init_from, settings[resume.INIT_KEY])
    if saved is not None and settings[resume.INIT_KEY] is None and saved.get(resume.INIT_KEY) is not None:
        # resumed without its start (model.init_from=null, or its folder gone): the checkpoint's weights grew
        # from the start its run had, which final/ records (it said "from scratch": a curriculum re-run refused it)
        start = (checkpoint.stored_config(latest.path).get("model", {}).get("init_from"), saved[resume.INIT_KEY])
    if latest is not None and (note := resume.cache_note(checkpoint.stored_config(latest.path), cfg)) is not None:
        log(f"[{cfg.stage}] {note}")
    if latest is not None and not checkpoint.measured_on(latest.path, dev_set(settings)):
        log(f"[{cfg.stage}] the dev set changed since {latest.path.name} (data.dev's content, data.dev_size, "
            "data.seed, data.skip_bad or the main task): the best checkpoint starts anew at this run's first "
            "evaluation; the earlier set's dev losses are not compared with the new ones (final_weights: best "
            "neither), and its best checkpoint is pruned as keep_last says")
    return settings, start
