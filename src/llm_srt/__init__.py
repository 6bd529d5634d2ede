"""LLM-SRT: many-to-many speech-to-text translation with speech LLMs and a three-stage curriculum."""

__version__ = "0.1.0"
