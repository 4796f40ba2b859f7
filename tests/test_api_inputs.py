"""Inputs the API once dropped without a word are refused, or honoured, clearly; error details say what
to do. Against a real uvicorn server on loopback."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf

from servers import PoisonedDetector, live_server


@pytest.fixture(scope="module")
def detectors(detector_factory) -> dict:
    return {"aasist": detector_factory("aasist", "fast")}


@pytest.fixture(scope="module")
def client(detectors) -> Iterator[httpx.Client]:
    with live_server(detectors) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def flac(samples_dir) -> tuple[str, bytes]:
    return ("p225_002_mic2.flac", (samples_dir / "p225_002_mic2.flac").read_bytes())


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and set(body) == {"code", "detail"}, body
    return body["detail"]


@pytest.mark.parametrize(
    ("path", "accepted"),
    [("/v1/predict", "`model`"), ("/v1/predict/batch", "`model`"), ("/predict", "no query parameters")],
)
def test_unknown_query_parameters_are_refused(client, flac, path, accepted):
    field = "files" if path.endswith("batch") else "file"
    detail = error(client.post(f"{path}?threshold=0.9", files={field: flac}), 400, "unknown_parameter")
    assert detail.startswith(f"Unknown query parameter `threshold`: {path} accepts {accepted}.")
    assert "VOXGUARD_" in detail
    detail = error(client.get("/v1/models?verbose=1&all=yes"), 400, "unknown_parameter")
    assert detail.startswith(
        "Unknown query parameter `all`, `verbose`: /v1/models accepts no query parameters"
    )


@pytest.mark.parametrize("path", ["/v1/predict", "/predict"])
def test_a_second_file_part_is_refused_not_dropped(client, flac, path):
    detail = error(client.post(path, files=[("file", flac), ("file", flac)]), 400, "too_many_files")
    assert detail == (
        f"The form has 2 `file` parts; {path} scores one. Send several files to /v1/predict/batch, one "
        "`files` part each."
    )


def test_unknown_form_fields_are_refused(client, flac):
    detail = error(
        client.post("/v1/predict", files={"file": flac}, data={"threshold": "0.9"}), 400, "unknown_field"
    )
    assert detail == "Unknown form field `threshold`: /v1/predict accepts `file` and `model`."


def test_the_model_may_come_from_the_query_or_the_form_but_not_two_different_ones(client, flac):
    detail = error(
        client.post("/v1/predict?model=aasist", files={"file": flac}, data={"model": "aasist-l"}),
        400,
        "conflicting_model",
    )
    assert detail == "The query asks for model 'aasist' but the form for 'aasist-l'. Send one of them."
    same = client.post("/v1/predict?model=aasist", files={"file": flac}, data={"model": "aasist"})
    assert same.status_code == 200 and same.json()["model"] == "aasist"
    # The form's model is honoured on its own (here: refused, because it is not loaded).
    error(client.post("/v1/predict", files={"file": flac}, data={"model": "aasist-l"}), 400, "unknown_model")
    batch = client.post("/v1/predict/batch?model=aasist", files={"files": flac}, data={"model": "aasist-l"})
    error(batch, 400, "conflicting_model")


def test_an_empty_model_means_the_default(client, flac):
    """What Swagger UI sends when the field is left empty."""
    for response in (
        client.post("/v1/predict", files={"file": flac}, data={"model": ""}),
        client.post("/v1/predict?model=", files={"file": flac}),
    ):
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "aasist"


def test_a_model_that_is_not_loaded_says_how_to_load_it(client, flac):
    detail = error(client.post("/v1/predict?model=aasist-l", files={"file": flac}), 400, "unknown_model")
    assert detail.startswith("model 'aasist-l' is not loaded; loaded: aasist. Start the server with ")
    assert "VOXGUARD_MODELS=aasist,aasist-l" in detail and "voxguard serve --models aasist,aasist-l" in detail
    detail = error(client.post("/v1/predict?model=wavlm", files={"file": flac}), 400, "unknown_model")
    assert "VOXGUARD_MODELS" not in detail and "models voxguard knows: aasist, aasist-l" in detail


def test_batch_without_a_body_names_its_own_field(client):
    detail = error(client.post("/v1/predict/batch"), 415, "unsupported_media_type")
    assert detail.startswith(
        "No Content-Type header. Send the audio as multipart/form-data with one `files` part"
    )
    assert "`file`" not in detail
    detail = error(client.post("/v1/predict"), 415, "unsupported_media_type")
    assert detail.startswith("No Content-Type header. Send the audio as multipart/form-data (field `file`)")
    assert "'none'" not in detail
    detail = error(
        client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert detail.startswith("Content type 'text/plain' is not accepted. Send the audio")


def test_405_and_404_say_what_would_work(client):
    response = client.get("/v1/predict")
    detail = error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert detail == "GET /v1/predict is not allowed; /v1/predict accepts POST. See /docs."
    assert error(client.get("/v2/predict"), 404, "not_found") == (
        "There is no GET /v2/predict. The API is described at /docs."
    )


def test_batch_item_errors_carry_an_error_id_only_when_there_is_one(client, flac):
    results = client.post(
        "/v1/predict/batch", files=[("files", flac), ("files", ("bad.mp3", b"junk"))]
    ).json()
    assert results["results"][1]["result"] is None
    assert set(results["results"][1]["error"]) == {"code", "detail"}
    assert results["results"][0]["result"]["prediction"] == "REAL"


def test_a_failed_file_in_a_batch_has_the_error_id_of_the_log(detectors):
    wave = (np.random.default_rng(3).standard_normal(20000) * 0.05).astype(np.float32)
    wave[0] = PoisonedDetector.POISON
    buf = io.BytesIO()
    sf.write(buf, wave, 16000, format="WAV", subtype="FLOAT")
    with live_server({"aasist": PoisonedDetector(detectors["aasist"])}, preprocess="reference") as srv:
        body = httpx.post(
            f"{srv.url}/v1/predict/batch", files={"files": ("p.wav", buf.getvalue())}, timeout=120
        )
    (item,) = body.json()["results"]
    assert item["error"]["code"] == "inference_failed"
    assert re.fullmatch(r"[0-9a-f]{12}", item["error"]["error_id"])
    assert item["error"]["error_id"] in item["error"]["detail"]
