"""The table `llm-srt bench` prints for the embedded models (bench/embedded.py's result): paper Table 7's shape, then
the ratios with their goals."""

from __future__ import annotations

from .common import GPU_PEAK, RESERVED, RISE, RSS_PEAK, memory_cell, reserved_legend
from .embedded import GOALS

SYSTEM_NAMES = {"llm-srt": "LLM-SRT (Q-Former, 80 tok)", "llm-srt-int8": "LLM-SRT (Q-Former), int8",
                "llm-srt-int8-compiled": "LLM-SRT (Q-Former), int8",
                "pooled-750": "Qwen2-Audio-style (pooled, 750 tok)"}


def format_table(result: dict) -> str:
    """Paper Table 7's shape: seconds for the N utterances by system, search and batch size; then the ratios."""
    s, m = result["setup"], result["machine"]
    memory = memory_column(result["decode"])
    width = max(12, len(memory))
    int8_peak = f", int8 GEMM {m['int8_matmul_gop_s']} GOP/s" if "int8_matmul_gop_s" in m else ""
    kernel = f" ({m['matmul_kernel']})" if "matmul_kernel" in m else ""  # the probe's fastest (older results: none)
    when = "this run, the higher of before and after the rows" if "yardstick_after" in m else "this run"
    origin = f" from {s['utterances_from']}" if s.get("utterances_from") else ""  # (older results: not said)
    lines = [f"Speed: {s['utterances']} utterances{origin} ({s['audio_seconds']} s of audio), {s['new_tokens']} "
             f"generated tokens each, {s['torch_threads']} torch threads; model: {s['model']}",
             f"Yardstick ({when}): memory bandwidth {m['bandwidth_gb_s']} GB/s ({_probes(m)}), {m['matmul_dtype']} "
             f"GEMM {m['matmul_gflop_s']} GFLOP/s{kernel}{int8_peak}; a decode step's bound = max((weight + KV cache "
             "bytes) / bandwidth, linear FLOPs x rows / peak + attention FLOPs / float peak)",
             *[f"WARNING: the yardstick's {key} moved from {before} to {after} during the run (a busy machine): the "
               "bounds use the higher" for key, (before, after) in m.get("yardstick_moved", {}).items()],
             *([f"int8 rows skipped: {s['int8_rows_skipped']}"] if s.get("int8_rows_skipped") else []),
             "",
             f"{'system':38} {'search':8} {'batch':>5} {'seconds':>9} {'utt/s':>7} {'speech tok':>10} "
             f"{memory:>{width}} {'ms/step':>8} {'bound ms':>8} {'x bound':>7}"]
    for r in result["decode"]:
        search = ("compiled" if r.get("compiled") else "greedy") if r["beam"] == 1 else f"beam {r['beam']}"
        lines.append(f"{SYSTEM_NAMES[r['system']]:38} {search:8} {r['batch_size']:>5} {r['seconds']:>9.2f} "
                     f"{r['utterances_per_s']:>7.2f} {r['speech_tokens']:>10} {memory_cell(r, memory):>{width}} "
                     f"{r['decode_step_ms']:>8.1f} {r['bound_step_ms']:>8.1f} {r['step_vs_bound']:>7.2f}")
    if memory == RESERVED:
        lines.append(reserved_legend("what a memory cap limits"))
    starts = [r["rss_start_mib"] for r in result["decode"] if r.get("rss_start_mib") is not None]
    if memory == RISE and starts:
        lines.append(f"  {RISE}: how far the process's resident memory rose in the row's timed pass, above the "
                     f"{min(starts):.0f}-{max(starts):.0f} MiB resident as it started (the models, what earlier "
                     "sections left); the process's peak is JSON `peak_mib`")
    for r in result["decode"]:
        if len(r.get("pass_seconds", ())) > 1:
            each = ", ".join(f"{x:.2f}" for x in r["pass_seconds"])
            lines.append(f"  {SYSTEM_NAMES[r['system']]}{', compiled' if r.get('compiled') else ''}, batch "
                         f"{r['batch_size']}: the median of "
                         f"{len(r['pass_seconds'])} passes taking turns ({each} s)")
    c = result["cascade"]
    if c and "failed" in c:
        lines.append(f"{'Cascade (Whisper ASR -> LLM MT)':38} FAILED ({c['failed']})")
    elif c:
        peak = f"RSS peak {c['peak_mib']:.0f} MiB; " if memory_cell(c, memory) == "-" else ""  # (no rise measured)
        lines.append(f"{'Cascade (Whisper ASR -> LLM MT)':38} {'greedy':8} {c['batch_size']:>5} {c['seconds']:>9.2f} "
                     f"{c['utterances_per_s']:>7.2f} {'-':>10} {memory_cell(c, memory):>{width}}  ({peak}tokens: ASR "
                     f"{c['asr_tokens_mean']}, MT {c['mt_tokens_mean']} per utterance)")
    e, t, o = result["encoder"], result["train"], result["overhead"]
    lines += ["",
              f"encoder, {e['clips']} x {e['clip_seconds']} s clips: variable length {e['variable_s']:.3f} s "
              f"({e['variable_frames']} frames), 30 s padded {e['padded_s']:.3f} s ({e['padded_frames']} frames)",
              f"training step, batch {t['batch_size']}: from audio {t['s_per_step_audio']:.3f} s (encoder "
              f"{t['encoder_s_per_audio_step']:.3f} s of it), from the feature cache {t['s_per_step_cached']:.3f} s "
              f"(encoder calls {t['encoder_calls_audio']} vs {t['encoder_calls_cached']})",
              f"translate(), batch {o['batch_size']}: {o['translate_s']:.2f} s; needed forward passes "
              f"{o['lower_bound_s']:.2f} s (encoder {o['encoder_s']:.2f}, adapter {o['adapter_s']:.2f}, prefill "
              f"{o['prefill_s']:.2f}, decode {o['decode_s']:.2f}; {o['llm_forward_calls']} LLM calls)",
              ""]
    judged = {"batch16_vs_batch1": s.get("batch16_vs_batch1_system"),
              "batch1_step_vs_bandwidth_bound": s.get("batch1_step_vs_bandwidth_bound_system")}
    for key, goal in result["goals"].items():
        how = ">=" if GOALS[key][1] == "min" else "<="
        value = "-" if result[key] is None else f"{result[key]:.2f}"
        verdict = ("not measured (no time left to divide by)" if result[key] is None
                   else "not judged (a CPU goal)" if goal["met"] is None else "met" if goal["met"] else "MISSED")
        lines.append(f"{key:38} {value:>7}   goal {how} {goal['target']:<5} {verdict}"
                     + (f"  ({judged[key]})" if judged.get(key) else ""))
    parts = result.get("batch16_vs_batch1_parts")
    if parts:
        top, outside = s["batch16_vs_batch1_batches"][0], parts["outside_decode_s"]
        ceiling = f"{parts['ceiling']:.2f}" if parts["ceiling"] else "-"
        lines.append(f"  batch16_vs_batch1 in parts ({parts['system']}): the decode steps alone "
                     f"{parts['decode_steps_ratio']:.2f}x; outside them (encoder, adapter, prefill) batch 1 "
                     f"{outside['1']:.2f} s, batch {top} {outside[str(top)]:.2f} s, so even free decode steps at "
                     f"batch {top} give at most {ceiling}x")
    lines.append(f"(bench took {s['bench_seconds']:.0f} s)")
    return "\n".join(lines)


def memory_column(rows: list[dict]) -> str:
    """The memory column's name, which says what it holds: on CUDA each row's own allocator peak and, where the rows
    measured it, its reserved peak beside it (the allocated peak alone understated what a card must hold); on the
    CPU what each row's pass added to the process's resident memory (`peak_rise_mib`), whose peak is the whole
    process's (the column showed that as "peak MiB", ~4967 for every float row of a run); results without the
    rise, the process's peak."""
    if any(r.get("peak_rise_mib") is not None for r in rows):
        return RISE
    if any(r.get("memory") == "gpu" for r in rows):
        return RESERVED if any(r.get("reserved_mib") is not None for r in rows) else GPU_PEAK
    return RSS_PEAK


def _probes(machine: dict) -> str:
    """How the bandwidth was measured (results written before the read probe have only the copy)."""
    size = f"{machine['copy_bytes'] / (1 << 30):.3g} GiB"
    if "read_gb_s" not in machine:
        return f"{size} copy"
    return f"the faster of a {size} copy, {machine['copy_gb_s']}, and read, {machine['read_gb_s']}"
