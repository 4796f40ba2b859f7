"""Uploaded bytes -> 16 kHz mono float32 waveform -> the fixed-length windows AASIST scores.

Knows nothing about HTTP or the model. One module per job; import from the module itself:

- :mod:`.options`: the sample rate, the window length and the knobs (``AudioOptions``), importing
  nothing heavy.
- :mod:`.errors`: ``AudioError`` and what audio is accepted.
- :mod:`.decoding`: any accepted upload to a waveform (``decode``).
- :mod:`.speech`: how much speech a waveform holds (frame levels, the speech span).
- :mod:`.windows`: a waveform to levelled model windows (``make_windows``, ``prepare``).
- :mod:`.streaming`: the same windows cut from a live stream, and its resampling.
"""
