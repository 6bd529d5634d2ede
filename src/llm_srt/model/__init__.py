"""Model code: frozen Whisper encoder, adapters, the causal LLM, the speech LLM, and converters."""
