"""The framework floor: a bare FastAPI app that reads an upload and answers a small JSON object.

``voxguard bench serve`` loads this and voxguard with the same body, the same load generator and the same
uvicorn, so voxguard's requests per second divided by this app's is the share of the framework's own
capacity that voxguard's extra work per request leaves. Run it with
``uvicorn voxguard.benchmarks.framework_floor:app``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/v1/predict")
async def predict(request: Request) -> dict[str, object]:
    body = await request.body()
    return {"prediction": "REAL", "bytes": len(body)}
