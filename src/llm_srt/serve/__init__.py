"""`llm-srt serve`: an HTTP API in the shape of OpenAI's audio API, a web page, and dynamic batching.

    from llm_srt.serve import create_app, ServeOptions
    app = create_app(SpeechTranslator.from_pretrained("runs/embedded/srt/final"), ServeOptions(max_upload_mb=20))
"""

from .app import ServeOptions, create_app
from .batcher import BatchOptions, Batcher
from .forms import ENDPOINTS

__all__ = ["ENDPOINTS", "BatchOptions", "Batcher", "ServeOptions", "create_app"]
