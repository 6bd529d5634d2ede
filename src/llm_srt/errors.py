"""The one error type users see: a single line saying what is wrong, where, and what to do."""


class LLMSRTError(Exception):
    """A problem the user can act on. The CLI prints it as one line (no traceback unless --debug)."""


class AudioError(LLMSRTError):
    """Audio that cannot be read, decoded or used."""


class UndecodableAudio(AudioError):
    """Bytes that no decoder opens (not audio, or an unknown format), as against a damaged file of a known one.
    `detail`: the decoder's own reason."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail


class ConfigError(LLMSRTError):
    """A config file or a key=value override that is wrong."""


class ManifestError(LLMSRTError):
    """A manifest row that is wrong (the message names file and line)."""
