"""The browser page at ``/``: its assets over HTTP, and the page itself in headless Chromium.

The browser tests use Playwright's sync API with Debian's chromium (``/usr/bin/chromium``), so they are
plain sync functions: the server runs in its own thread (``live_server``), never on pytest's loop.
Screenshots go to ``test-artifacts/``; ``VOXGUARD_UPDATE_SCREENSHOT=1`` makes the timeline test refresh
``docs/screenshot.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from browser import CHROMIUM, CHROMIUM_ARGS
from servers import live_server
from voxguard.audio.options import AudioOptions
from voxguard.audio.windows import prepare

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
SENTENCE = "Please call Stella. Ask her to bring these things with her from the store."
WAIT_MS = 60_000  # a result on a slow CI machine
SPINNER_ANIMATION = """() => {
    const s = Object.assign(document.createElement("span"), { className: "spinner" });
    document.body.append(s);
    const name = getComputedStyle(s).animationName;
    s.remove();
    return name;
}"""


@pytest.fixture(scope="module")
def detectors(detector_factory) -> dict:
    return {"aasist": detector_factory("aasist", "fast")}


@pytest.fixture(scope="module")
def server(detectors) -> Iterator:
    with live_server(detectors) as srv:
        yield srv


# ---------------------------------------------------------------- audio and other inputs


def speech(samples_dir: Path, names: list[str]) -> np.ndarray:
    """Real recordings, decoded to 16 kHz mono and joined end to end."""
    return np.concatenate(
        [prepare((samples_dir / n).read_bytes(), AudioOptions())[0].waveform for n in names]
    )


@pytest.fixture(scope="module")
def media(samples_dir: Path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("web-media")
    names = ["p225_001_mic1.flac", "p225_002_mic1.flac", "voicememo.mp3", "p225_002_mic2.flac"]
    long_wave = speech(samples_dir, names * 2)[: 12 * 16000]  # ~12 s: several 4 s windows, 2 s apart
    sf.write(folder / "long.wav", long_wave, 16000, subtype="PCM_16")
    # The fake microphone: 16-bit 48 kHz mono, a few seconds of real speech (Chromium loops it).
    mic = torchaudio.functional.resample(torch.from_numpy(speech(samples_dir, names[:2])), 16000, 48000)
    sf.write(folder / "mic.wav", mic.numpy(), 48000, subtype="PCM_16")
    (folder / "picture.wav").write_bytes(png_bytes())
    # Real speech, then espeak-ng speech: the timeline should turn from REAL to FAKE at the splice.
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is required (.ci/run installs it: apt-get install espeak-ng)")
    subprocess.run([espeak, "-w", str(folder / "tts.wav"), SENTENCE], check=True)
    tts = prepare((folder / "tts.wav").read_bytes(), AudioOptions())[0].waveform
    spliced = np.concatenate([speech(samples_dir, names[1:3] + names[:1]), tts])
    sf.write(folder / "spliced.wav", spliced, 16000, subtype="PCM_16")
    return {
        "long": folder / "long.wav",
        "spliced": folder / "spliced.wav",
        "mic": folder / "mic.wav",
        "png": folder / "picture.wav",
    }


def png_bytes() -> bytes:
    """A valid 1x1 PNG (what a renamed image really is)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------- HTTP


def test_page_and_assets_are_local_and_typed(server):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page.text)
    assert refs and not [r for r in refs if re.match(r"(?i)(https?:)?//", r)], refs
    assets = {r for r in refs if r.startswith("/web/")}
    app_js = httpx.get(f"{server.url}/web/app.js").text
    assets |= {"/web/" + m for m in re.findall(r"""from\s+["']\./([\w.-]+)["']""", app_js)}  # module imports
    assert {"/web/style.css", "/web/app.js", "/web/api.js", "/web/render.js", "/web/recorder.js"} <= assets
    types = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
    for path in sorted(assets):
        r = httpx.get(f"{server.url}{path}")
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith(types[Path(path).suffix]), (path, r.headers)
        assert not re.search(r"""(?:url\(|import\s|from\s)["']?https?://""", r.text), path
    for missing in ("/web/nope.js", "/web/..%2Fapp.py", "/web/__init__.py"):
        r = httpx.get(f"{server.url}{missing}")
        assert r.status_code == 404 and r.json()["code"] == "not_found", missing
    openapi = httpx.get(f"{server.url}/openapi.json").json()
    assert "/" not in openapi["paths"]
    # All three outcomes, where a new user first reads what the service answers.
    tagline = re.sub(r"<[^>]+>|\s+", " ", re.search(r'class="tagline">(.*?)</p>', page.text, re.S).group(1))
    assert all(v in tagline for v in ("REAL", "FAKE", "INCONCLUSIVE")), tagline
    assert "INCONCLUSIVE" in openapi["info"]["description"]
    assert "INCONCLUSIVE" in openapi["paths"]["/v1/predict"]["post"]["description"]


def test_page_needs_no_key_but_the_api_does(detectors):
    with live_server(detectors, api_keys=["k"]) as srv:
        assert httpx.get(f"{srv.url}/").status_code == 200
        assert httpx.get(f"{srv.url}/web/app.js").status_code == 200
        assert httpx.get(f"{srv.url}/v1/models").status_code == 401


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser(media) -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright  # a dev dependency (pyproject.toml)

    fake_mic = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={media['mic']}",
    ]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + fake_mic)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, request):
    """``open_page(url, width, height)`` -> a fresh page; its screenshot is saved when the test ends."""
    pages = []

    def open_(url: str, width: int = 1100, height: int = 900, **options):
        page = browser.new_page(viewport={"width": width, "height": height}, **options)
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url, wait_until="networkidle")  # the model list has been fetched
        pages.append((page, errors))
        return page

    yield open_
    ARTIFACTS.mkdir(exist_ok=True)
    for i, (page, errors) in enumerate(pages):
        page.screenshot(path=ARTIFACTS / f"web-{request.node.name}-{i}.png", full_page=True)
        page.close()
        assert not errors, errors


def done_card(page):
    card = page.locator(".card[data-state=done]").first
    card.wait_for()
    return card


def error_card(page):
    card = page.locator(".card[data-state=error]").first
    card.wait_for()
    return card


def confidence_text(card) -> str:
    text = card.locator(".gauge-value").inner_text()
    assert re.fullmatch(r"(\d{2}\.\d|>99\.9)%", text), text
    return text


@pytest.mark.slow
def test_upload_shows_the_verdict_card(server, open_page, samples_dir):
    page = open_page(server.url)
    assert page.locator("#model-field").is_hidden()  # one model: no selector
    page.set_input_files("#file-input", samples_dir / "p225_002_mic2.flac")
    card = done_card(page)
    assert card.locator(".verdict-label").inner_text().endswith("REAL")
    assert "Likely a human voice" in card.inner_text()
    shown = confidence_text(card)
    facts = card.locator(".facts").inner_text()
    assert "16,000 Hz" in facts and "3.94 s (2.54 s of speech)" in facts
    size = (samples_dir / "p225_002_mic2.flac").stat().st_size
    assert re.search(rf"Format\s+audio/flac · {round(size / 1024)} KB", facts), facts
    assert "p225_002_mic2.flac" not in facts  # the card's title already says it
    assert card.locator(".warnings li").count() >= 1  # shorter than one window: repeated
    assert card.locator(".timeline").count() == 0  # one window: no timeline
    announced = page.locator("#announce").inner_text()
    assert "REAL" in announced and f"confidence {shown}." in announced  # what the card shows, not 100.0%


@pytest.mark.slow
def test_too_little_speech_is_inconclusive_with_no_gauge(server, open_page, samples_dir):
    page = open_page(server.url)
    page.set_input_files("#file-input", samples_dir / "p225_001_mic1.flac")  # 1.3 s of speech
    card = done_card(page)
    assert card.locator(".verdict-label").inner_text().endswith("INCONCLUSIVE")
    assert "Too short to judge: 1.3 s of speech, at least 2 s needed" in card.inner_text()
    leaning = card.locator(".verdict-leaning").inner_text()  # which way it leaned, never as the verdict
    assert re.fullmatch(
        r"The model leaned (REAL|FAKE) \(fake probability [<\d.]+\), but on this little speech "
        r"that is unreliable: not a verdict\.",
        leaning,
    ), leaning
    assert card.locator(".gauge").count() == 0
    assert re.search(r"Fake probability\s+—", card.locator(".facts").inner_text())
    assert "is-inconclusive" in card.get_attribute("class")
    assert "inconclusive, too short to judge" in page.locator("#announce").inner_text()


@pytest.mark.slow
def test_a_long_recording_says_it_is_being_worked_on(server, open_page, samples_dir, tmp_path):
    wave = speech(samples_dir, ["p225_002_mic1.flac", "voicememo.mp3", "p225_002_mic2.flac"])
    path = tmp_path / "two-minutes.wav"
    sf.write(path, np.tile(wave, 12)[: 120 * 16000], 16000, subtype="PCM_16")
    page = open_page(server.url)
    page.set_input_files("#file-input", path)
    pending = page.locator(".card[data-state=pending] .pending-text")
    pending.filter(has_text=re.compile(r"Analysing 2 min 0 s of audio… \d+ s so far\.")).wait_for()
    assert "scored 4 seconds at a time" in pending.inner_text()
    card = done_card(page)
    windows = len(prepare(path.read_bytes(), AudioOptions())[1].spans)
    assert card.locator(".timeline .window").count() == windows > 50


def window_probabilities(card) -> list[float]:
    cells = card.locator(".window-table tbody td:nth-child(2)").all_text_contents()
    return [float(v.lstrip("<")) for v in cells]


@pytest.mark.slow
def test_long_files_show_the_timeline(server, open_page, media):
    page = open_page(server.url)
    page.set_input_files("#file-input", media["long"])
    card = page.locator(".card:has(.timeline)").first
    card.wait_for()
    assert "long.wav" in card.locator(".card-title").inner_text()
    windows = card.locator(".timeline .window").count()
    assert windows > 1
    assert len(window_probabilities(card)) == windows
    assert max(window_probabilities(card)) < 0.5  # real speech throughout
    axis = card.locator(".timeline-svg").text_content()
    assert "time (s)" in axis and "fake probability" in axis
    confidence_text(card)

    page.set_input_files("#file-input", media["spliced"])
    page.locator(".card:has(.timeline)").nth(1).wait_for()
    card = page.locator(".card").first  # newest first
    assert "spliced.wav" in card.locator(".card-title").inner_text()
    probabilities = window_probabilities(card)
    assert probabilities[0] < 0.5 < probabilities[-1]  # real, then synthetic
    assert card.locator(".verdict-label").inner_text().endswith("FAKE")
    said = card.locator(".verdict-text").all_inner_texts()
    assert any(re.fullmatch(r"Synthetic speech from \d+\.\d s to \d+\.\d s", t) for t in said), said
    assert card.locator(".timeline .segment-band").count() >= 1  # the stretch is marked on the timeline
    colours = card.locator(".timeline .dot").evaluate_all("dots => dots.map(d => d.getAttribute('fill'))")
    assert colours[0] != colours[-1]
    # A window not called fake that also covers part of a segment is grey, not green: the speech only it
    # covers is not shown as real (a fully synthetic file once read "real until 1.6 s").
    span = "gs => gs.map(g => [+g.dataset.start, +g.dataset.end])"
    spans = card.locator(".timeline .window").evaluate_all(span)
    segments = card.locator(".timeline .segment").evaluate_all(span)
    partly = [any(a < e and b > s and (a < s or b > e) for s, e in segments) for a, b in spans]
    assert any(partly), (spans, segments)  # the window astride the splice
    classes = card.locator(".timeline .window").evaluate_all("ws => ws.map(w => w.getAttribute('class'))")
    assert [c == "window uncertain" for c in classes] == partly
    assert all((c == "hsl(220 8% 50%)") == p for c, p in zip(colours, partly, strict=True))
    page.evaluate("document.getElementById('results-title').scrollIntoView()")
    # docs/screenshot.png is refreshed on request only, so a test run leaves the tree clean.
    target = (
        REPO / "docs" / "screenshot.png"
        if os.environ.get("VOXGUARD_UPDATE_SCREENSHOT")
        else ARTIFACTS / "screenshot.png"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=target)


@pytest.mark.slow
def test_non_audio_file_shows_the_api_error(server, open_page, media):
    page = open_page(server.url)
    page.set_input_files("#file-input", media["png"])
    card = error_card(page)
    text = card.inner_text()
    assert "undecodable_audio" in text and "HTTP 415" in text
    assert "not in a recognised audio format" in text  # the API's detail, verbatim
    assert card.locator(".retry").count() == 0  # retrying cannot help
    assert "undecodable_audio" in page.locator("#announce").inner_text()


@pytest.mark.slow
def test_record_from_the_fake_microphone(server, open_page):
    page = open_page(server.url)
    record = page.locator("#record")
    record.click()
    page.locator("#record.recording").wait_for()
    assert "Stop" in record.inner_text()
    page.wait_for_timeout(4500)
    record.click()
    card = done_card(page)
    assert re.search(r"recording-\d{6}\.(webm|ogg|m4a)", card.locator(".card-title").inner_text())
    assert card.locator(".verdict-label").inner_text().split()[-1] in {"REAL", "FAKE"}
    confidence_text(card)
    duration = float(re.search(r"Duration\s+([\d.]+) s", card.locator(".facts").inner_text()).group(1))
    assert 3.5 < duration < 6.5
    assert "Record" in record.inner_text()


@pytest.mark.slow
def test_live_mode_streams_the_microphone_and_shows_window_verdicts(server, open_page):
    page = open_page(server.url)
    live = page.locator("#live")
    live.click()
    page.locator("#live.recording").wait_for()
    card = page.locator(".card.live-card").first
    card.locator(".timeline .dot").nth(1).wait_for(timeout=20_000)  # >= 2 windows: 5 s of streaming
    assert card.get_attribute("data-state") == "live"
    assert card.locator(".verdict-label").inner_text().split()[-1] in {"REAL", "FAKE"}
    live.click()
    page.locator(".card.live-card[data-state=done]").wait_for(timeout=20_000)
    final = card.locator(".verdict-scope").inner_text()
    windows = int(re.search(r"(\d+) windows", final).group(1))
    assert windows >= 2 and card.locator(".timeline .dot").count() == windows
    confidence_text(card)
    assert "Live stream ended" in page.locator("#live-status").inner_text()
    assert "Go live" in live.inner_text()


def _window(index: int, prediction: str) -> str:
    p = 0.99 if prediction == "FAKE" else 0.01
    return json.dumps(
        {
            "type": "window",
            "index": index,
            "start_s": index,
            "end_s": index + 4.04,
            "score": 0.0,
            "fake_probability": p,
            "prediction": prediction,
            "silent": False,
            "batch_size": 1,
        }
    )


@pytest.mark.slow
def test_screen_reader_hears_the_final_verdict_when_the_live_card_turns_fake(server, open_page):
    """A stream whose last window is REAL but which holds a synthetic stretch ends FAKE; the live status
    must say FAKE too, not keep the last window's "Live: REAL". The server's side is scripted."""
    done = {
        "type": "done",
        "prediction": "FAKE",
        "is_fake": True,
        "confidence": 0.99,
        "fake_probability": 0.99,
        "score": -4.6,
        "reason": None,
        "segments": [{"start_s": 0.0, "end_s": 4.04, "fake_probability": 0.99}],
        "windows": 2,
        "speech_s": 5.0,
    }

    def stream(ws) -> None:
        def on_message(message) -> None:
            if isinstance(message, str) and json.loads(message).get("type") == "end":
                ws.send(json.dumps(done))
                ws.close(code=1000)
            elif isinstance(message, str):  # the config message: the stream is open
                ws.send(_window(0, "FAKE"))
                ws.send(_window(1, "REAL"))

        ws.on_message(on_message)

    page = open_page(server.url)
    page.route_web_socket(re.compile(r".*/v1/stream.*"), stream)
    page.locator("#live").click()
    page.locator("#announce", has_text="Live: REAL").wait_for()
    page.locator("#live").click()
    card = page.locator(".card.live-card[data-state=done]")
    card.wait_for()
    assert card.locator(".verdict-label").inner_text().endswith("FAKE")
    announced = page.locator("#announce").inner_text()
    assert announced.startswith("Live stream ended over 2 windows: FAKE, confidence 99.0%"), announced
    assert "synthetic speech from 0.0 to 4.0 seconds" in announced and "REAL" not in announced


@pytest.mark.slow
def test_api_key_is_asked_for_and_then_used(detectors, open_page, samples_dir):
    with live_server(detectors, api_keys=["k"]) as srv:
        page = open_page(srv.url)
        page.set_input_files("#file-input", samples_dir / "p225_002_mic2.flac")
        card = error_card(page)
        assert "unauthorized" in card.inner_text() and "HTTP 401" in card.inner_text()
        detail = card.locator(".problem-detail")
        assert "`" not in detail.inner_text()  # the API's `code` marks are code spans, not backticks
        assert detail.locator("code").all_inner_texts() == ["X-API-Key: <key>", "Authorization: Bearer <key>"]
        assert page.locator("#settings").get_attribute("open") is not None
        page.fill("#api-key", "k")
        card.locator(".retry").click()
        card = done_card(page)
        assert card.locator(".verdict-label").inner_text().endswith("REAL")
        assert page.evaluate("sessionStorage.getItem('voxguard.apiKey')") == "k"


@pytest.mark.slow
def test_model_selector_lists_the_loaded_models(detectors, detector_factory, open_page, samples_dir):
    both = {**detectors, "aasist-l": detector_factory("aasist-l", "fast")}
    with live_server(both, models=["aasist", "aasist-l"]) as srv:
        page = open_page(srv.url)
        assert page.locator("#model-field").is_visible()
        assert page.locator("#model option").count() == 2
        page.select_option("#model", "aasist-l")
        with page.expect_file_chooser() as chooser:  # the drop zone is a button: Enter opens the picker
            page.focus("#drop")
            page.keyboard.press("Enter")
        chooser.value.set_files(samples_dir / "p225_002_mic1.flac")
        assert re.search(r"Model\s+aasist-l", done_card(page).locator(".facts").inner_text())


@pytest.mark.slow
def test_phone_width_has_no_horizontal_scroll(server, open_page, media):
    page = open_page(server.url, width=375, height=740, reduced_motion="reduce")
    assert page.evaluate(SPINNER_ANIMATION) == "none"  # prefers-reduced-motion: no animation
    page.set_input_files("#file-input", media["long"])
    page.locator(".card:has(.timeline)").wait_for()
    page.set_input_files("#file-input", media["png"])
    error_card(page)
    page.locator(".window-table summary").click()  # the table opened, too
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


@pytest.mark.slow
def test_phone_width_scrolls_the_new_result_into_view(server, open_page, samples_dir):
    page = open_page(server.url, width=375, height=740, reduced_motion="reduce")
    below = "document.getElementById('results').getBoundingClientRect().top > window.innerHeight"
    assert page.evaluate(below)  # at 375 px the results start below the fold
    page.set_input_files("#file-input", samples_dir / "p225_001_mic1.flac")
    card = done_card(page)
    top = card.evaluate("c => c.getBoundingClientRect().top")
    assert 0 <= top < 740 and page.evaluate("window.scrollY") > 0
