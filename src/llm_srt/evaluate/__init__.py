"""Evaluation: the paper's metrics (metrics.py), the `score` verb (score.py) and result reports (report.py: the
scores; render.py: the tables, report.md and plots)."""

from .metrics import METRICS, Score, asr_error_rate, bleu, cer, chrf, compute, normalize, wer

__all__ = ["METRICS", "Score", "asr_error_rate", "bleu", "cer", "chrf", "compute", "normalize", "wer"]
