"""What audio is accepted, and :class:`AudioError`, raised for everything that can go wrong with it.

Each error has a stable ``code`` so the API layer can map it to a response without parsing text.
"""

from __future__ import annotations

from typing import Literal

ACCEPTED_FORMATS = "WAV, FLAC, MP3, OGG/Vorbis, OGG/Opus, M4A/AAC, WebM/Opus"
MIN_SOURCE_RATE = 4000
MAX_SOURCE_RATE = 192000

ErrorCode = Literal[
    "empty_input",
    "undecodable_audio",
    "no_audio_stream",
    "audio_too_short",
    "audio_too_long",
    "invalid_samples",
    "no_speech",
]


class AudioError(Exception):
    """The audio was rejected. ``code`` is stable for machines, ``detail`` says what was wrong and what is
    accepted, for the person who sent it."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: str = code
        self.detail: str = detail
