// Talking to the voxguard API: the key, the model list, one prediction. Errors become ApiProblem.

const KEY_STORAGE = "voxguard.apiKey";

export class ApiProblem extends Error {
  constructor(status, code, detail, errorId = null) {
    super(detail);
    this.status = status; // HTTP status, or 0 when the server could not be reached
    this.code = code;
    this.detail = detail;
    this.errorId = errorId;
  }
}

export function getApiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

async function call(path, init = {}) {
  const headers = new Headers(init.headers);
  const key = getApiKey();
  if (key) headers.set("X-API-Key", key);
  let response;
  try {
    response = await fetch(path, { ...init, headers });
  } catch (err) {
    throw new ApiProblem(0, "network_error", `The server could not be reached (${err.message}).`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    if (body && body.code) throw new ApiProblem(response.status, body.code, body.detail, body.error_id);
    throw new ApiProblem(response.status, `http_${response.status}`, response.statusText || "Request failed.");
  }
  return body;
}

/** The loaded models: {models: [{name, ...}], default}. */
export function listModels() {
  return call("/v1/models");
}

/** Score one blob (a File or a recording) with POST /v1/predict; resolves to the PredictResponse. */
export function predict(blob, filename, model) {
  const form = new FormData();
  form.append("file", blob, filename);
  const query = model ? `?model=${encodeURIComponent(model)}` : "";
  return call(`/v1/predict${query}`, { method: "POST", body: form });
}
