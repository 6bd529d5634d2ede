"""How an evaluation runs, beside its rows: what its report records of the decoding (`decoding_record`, also part
of a journal's settings) and where COMET runs (`comet_options`)."""

from dataclasses import replace

from ..device import Placement
from ..model.decoding import DecodingOptions
from .comet import CometOptions


def comet_options(comet: CometOptions, placement: Placement) -> CometOptions:
    """COMET's options on the placement `evaluate` was given: on cuda:N, that GPU alone (`CometOptions.device`); on
    the CPU, no GPU (gpus=0) unless --comet-gpus says otherwise: the bridge's default takes a GPU whenever one is
    visible, and `--device cpu --comet` on a GPU host ran COMET on the GPU until 2026-12-05."""
    where = placement.device
    if where.type == "cuda" and where.index is not None:
        return replace(comet, device=str(where))
    if where.type == "cpu" and comet.gpus is None:
        return replace(comet, gpus=0)
    return comet


def decoding_record(tasks: dict[str, str], options: DecodingOptions, placement: Placement, with_mt: bool,
                    world_size: int | None = None) -> dict[str, object]:
    """How the systems decoded here ran, for the report (system -> task, then the options that change outputs), and
    `world_size`, the number of processes, if given: each rank batches its own shard, so bfloat16 or int8 outputs,
    which may depend on their batch's other rows, may change with it; float32 outputs do not (tested). A journal's
    settings hold the number of processes in their layout instead."""
    record: dict[str, object] = {"tasks": tasks, "beam_size": options.beam_size,
                                 "max_new_tokens": options.max_new_tokens}
    if options.beam_size > 1:
        record["length_penalty"] = options.length_penalty
    record |= {"no_repeat_ngram_size": options.no_repeat_ngram_size,
               "repetition_penalty": options.repetition_penalty, "force_srt_tags": options.force_srt_tags,
               "device": placement.device.type, "dtype": placement.dtype_name}
    if options.compile:  # the same tokens in float32 (tested); fused kernels may round otherwise in bfloat16
        record["compile"] = True
    if with_mt:
        record["with_mt"] = True
    if world_size is not None:
        record["world_size"] = world_size
    return record
