// Wiring: the file drop zone, the Record button, the settings, and one card per analysed item.

import { ApiProblem, getApiKey, listModels, predict, setApiKey } from "./api.js";
import { liveSupported, startLive } from "./live.js";
import { describeMicError, recordingSupported, startRecording } from "./recorder.js";
import {
  liveCard,
  pendingCard,
  percent,
  setPending,
  showError,
  showLive,
  showResult,
  updatePending,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const ui = {
  drop: $("drop"),
  fileInput: $("file-input"),
  record: $("record"),
  live: $("live"),
  liveLabel: document.querySelector("#live .live-label"),
  liveStatus: $("live-status"),
  recordLabel: document.querySelector("#record .record-label"),
  recordStatus: $("record-status"),
  settings: $("settings"),
  modelField: $("model-field"),
  model: $("model"),
  apiKey: $("api-key"),
  results: $("results"),
  empty: $("empty"),
  clear: $("clear"),
  announce: $("announce"),
};

function announce(text) {
  ui.announce.textContent = text;
}

const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

function addCard(card) {
  ui.results.prepend(card);
  ui.empty.hidden = true;
  ui.clear.hidden = false;
  reveal(card);
}

/** On a phone the results are below the fold: bring a new card into view, or nothing seems to happen. */
function reveal(card) {
  const { top, bottom } = card.getBoundingClientRect();
  if (top >= 0 && bottom <= window.innerHeight) return;
  card.scrollIntoView({ block: "start", behavior: reducedMotion.matches ? "auto" : "smooth" });
}

/** Send one blob to the API and keep its card up to date; a Retry re-sends the same blob. */
async function analyse(blob, filename, card = null) {
  if (!card) {
    card = pendingCard(filename, blob);
    addCard(card);
  } else {
    setPending(card);
  }
  const started = performance.now();
  let duration = null;
  audioDuration(blob).then((seconds) => (duration = seconds));
  const progress = setInterval(() => updatePending(card, (performance.now() - started) / 1000, duration), 1000);
  try {
    const result = await predict(blob, filename, ui.model.value || null);
    showResult(card, result, blob);
    announce(`${filename}: ${spoken(result)}`);
  } catch (err) {
    const problem = err instanceof ApiProblem ? err : new ApiProblem(0, "client_error", String(err));
    showError(card, problem, () => analyse(blob, filename, card));
    announce(`${filename}: error ${problem.code}. ${problem.detail}`);
    if (problem.status === 401) askForKey();
  } finally {
    clearInterval(progress);
  }
}

function spoken(result) {
  if (result.prediction === "INCONCLUSIVE") return `inconclusive, ${result.reason}.`;
  const where = result.segments.map((s) => `synthetic speech from ${s.start_s.toFixed(1)} to ${s.end_s.toFixed(1)} seconds`);
  return [`${result.prediction}, confidence ${percent(result.confidence)}`, ...where].join("; ") + ".";
}

/** The blob's length in seconds as the browser reads it, or null (unknown, or not decodable here). */
function audioDuration(blob) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(blob);
    const audio = new Audio();
    const done = (value) => {
      URL.revokeObjectURL(url);
      resolve(Number.isFinite(value) && value > 0 ? value : null);
    };
    audio.preload = "metadata";
    audio.addEventListener("loadedmetadata", () => done(audio.duration));
    audio.addEventListener("error", () => done(null));
    audio.src = url;
  });
}

function analyseFiles(files) {
  for (const file of files) analyse(file, file.name);
}

function askForKey() {
  ui.settings.open = true;
  if (!ui.apiKey.value) ui.apiKey.focus();
}

/** Fill the model selector from GET /v1/models; it stays hidden with a single model. */
async function loadModels() {
  try {
    const { models, default: fallback } = await listModels();
    ui.model.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.engine}, ${m.device})`, m.name)));
    ui.model.value = fallback;
    ui.modelField.hidden = models.length < 2;
  } catch {
    ui.modelField.hidden = true; // e.g. 401 before a key is entered; analyse() reports the error itself
  }
}

function setupFiles() {
  ui.drop.addEventListener("click", () => ui.fileInput.click());
  ui.fileInput.addEventListener("change", () => {
    analyseFiles([...ui.fileInput.files]);
    ui.fileInput.value = "";
  });
  // Dropping anywhere on the page works; the drop zone shows that it will accept the files.
  window.addEventListener("dragover", (event) => {
    event.preventDefault();
    ui.drop.classList.add("dragging");
  });
  window.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) ui.drop.classList.remove("dragging");
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    ui.drop.classList.remove("dragging");
    analyseFiles([...(event.dataTransfer?.files || [])]);
  });
}

function setupRecorder() {
  let session = null;
  let ticker = null;
  const setRecording = (on) => {
    ui.record.classList.toggle("recording", on);
    ui.recordLabel.textContent = on ? "Stop" : "Record";
    ui.record.setAttribute("aria-label", on ? "Stop recording" : "Record from the microphone");
  };
  setRecording(false);

  ui.record.addEventListener("click", async () => {
    if (session) {
      const current = session;
      session = null;
      clearInterval(ticker);
      setRecording(false);
      const recorded = current.elapsedSeconds().toFixed(0);
      const { blob, filename } = await current.stop();
      ui.recordStatus.textContent = `Recorded ${recorded} s (${filename}). Press Record to record again.`;
      analyse(blob, filename);
      return;
    }
    if (!recordingSupported()) {
      ui.recordStatus.textContent = describeMicError(null);
      return;
    }
    try {
      session = await startRecording();
    } catch (err) {
      ui.recordStatus.textContent = describeMicError(err);
      return;
    }
    setRecording(true);
    const tick = () => (ui.recordStatus.textContent = `Recording… ${session.elapsedSeconds().toFixed(0)} s. Press Stop to analyse.`);
    tick();
    ticker = setInterval(() => session && tick(), 500);
  });
}

/** Live mode: stream the microphone over the WebSocket; one card, updated with every window. */
function setupLive() {
  let stream = null;
  const setLive = (on) => {
    ui.live.classList.toggle("recording", on);
    ui.liveLabel.textContent = on ? "Stop live" : "Go live";
    ui.live.setAttribute("aria-label", on ? "Stop the live stream" : "Stream the microphone live");
  };
  const finish = (text) => {
    stream = null;
    setLive(false);
    ui.liveStatus.textContent = text;
  };
  setLive(false);

  ui.live.addEventListener("click", async () => {
    if (stream) {
      stream.stop();
      stream = null;
      setLive(false);
      ui.liveStatus.textContent = "Finishing the last window…";
      return;
    }
    if (!liveSupported()) {
      ui.liveStatus.textContent = describeMicError(null);
      return;
    }
    const card = liveCard();
    addCard(card);
    const windows = [];
    try {
      stream = await startLive({
        model: ui.model.value || null,
        apiKey: getApiKey(),
        onWindow(message) {
          windows.push(message);
          showLive(card, windows);
          announce(`Live: ${message.prediction}, fake probability ${message.fake_probability.toFixed(2)}.`);
        },
        onDone(message) {
          if (windows.length) showLive(card, windows, message);
          // The card now shows the whole stream's verdict, which may differ from the last window's:
          // say it, or a screen reader keeps the last "Live: REAL" while the card reads FAKE.
          const verdict = message.prediction ? spoken(message) : "no speech.";
          announce(`Live stream ended over ${message.windows} windows: ${verdict}`);
          finish(`Live stream ended: ${message.prediction ?? "no speech"} over ${message.windows} windows.`);
        },
        onError(problem) {
          showError(card, new ApiProblem(0, problem.code, problem.detail), null);
          finish(`Live stream stopped: ${problem.code}.`);
          if (problem.code === "unauthorized") askForKey();
        },
      });
    } catch (err) {
      card.remove();
      finish(describeMicError(err));
      return;
    }
    setLive(true);
    ui.liveStatus.textContent = "Live: speak now. Press Stop live to finish.";
  });
}

function setupSettings() {
  ui.apiKey.value = getApiKey();
  ui.apiKey.addEventListener("input", () => setApiKey(ui.apiKey.value.trim()));
  ui.apiKey.addEventListener("change", loadModels);
  ui.clear.addEventListener("click", () => {
    ui.results.replaceChildren();
    ui.empty.hidden = false;
    ui.clear.hidden = true;
    announce("Results cleared.");
  });
}

setupFiles();
setupRecorder();
setupLive();
setupSettings();
loadModels();
