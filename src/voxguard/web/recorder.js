// Microphone recording with MediaRecorder: start() -> handle; handle.stop() -> {blob, filename}.

const PREFERRED_TYPE = "audio/webm;codecs=opus";

const EXTENSIONS = { "audio/webm": "webm", "audio/ogg": "ogg", "audio/mp4": "m4a", "audio/wav": "wav" };

export function recordingSupported() {
  return Boolean(window.MediaRecorder && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

function extensionFor(mimeType) {
  return EXTENSIONS[(mimeType || "").split(";")[0]] || "webm";
}

function timestamp() {
  return new Date().toTimeString().slice(0, 8).replaceAll(":", "");
}

/** Ask for the microphone and start recording; rejects when it is refused or unavailable. */
export async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const options = MediaRecorder.isTypeSupported(PREFERRED_TYPE) ? { mimeType: PREFERRED_TYPE } : {};
  const recorder = new MediaRecorder(stream, options);
  const chunks = [];
  recorder.addEventListener("dataavailable", (event) => {
    if (event.data.size > 0) chunks.push(event.data);
  });
  recorder.start(250);
  const startedAt = performance.now();

  return {
    elapsedSeconds: () => (performance.now() - startedAt) / 1000,
    stop: () =>
      new Promise((resolve) => {
        recorder.addEventListener(
          "stop",
          () => {
            stream.getTracks().forEach((track) => track.stop());
            const type = recorder.mimeType || chunks[0]?.type || "audio/webm";
            const blob = new Blob(chunks, { type });
            resolve({ blob, filename: `recording-${timestamp()}.${extensionFor(type)}` });
          },
          { once: true },
        );
        recorder.stop();
      }),
  };
}

/** A sentence for why the microphone could not be used. */
export function describeMicError(err) {
  if (!window.isSecureContext) {
    return "The microphone needs a secure page: open this page over HTTPS (make run-tls) or on localhost.";
  }
  if (err && (err.name === "NotAllowedError" || err.name === "SecurityError")) {
    return "Microphone access was refused. Allow it in the browser's site settings and try again.";
  }
  if (err && err.name === "NotFoundError") return "No microphone was found.";
  return `The microphone could not be started (${err ? err.message || err.name : "not supported"}).`;
}
