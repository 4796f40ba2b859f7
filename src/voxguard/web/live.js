// Live mode: microphone -> 16 kHz float32 frames -> WebSocket /v1/stream -> a verdict per window.
// Protocol: docs/streaming.md. The AudioContext asks for 16 kHz so the browser resamples the mic; a
// browser that ignores the request still works, since the page announces the real rate to the server.

const RATE = 16000;
const FRAME = RATE / 4; // send 0.25 s per message

export function liveSupported() {
  return Boolean(navigator.mediaDevices?.getUserMedia && window.AudioContext && window.WebSocket);
}

function streamUrl({ model, apiKey, hopS }) {
  const url = new URL("/v1/stream", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("format", "f32");
  url.searchParams.set("hop_s", String(hopS));
  if (model) url.searchParams.set("model", model);
  if (apiKey) url.searchParams.set("api_key", apiKey);
  return url;
}

async function captureNode(context, source, onSamples) {
  if (context.audioWorklet) {
    await context.audioWorklet.addModule("/web/live-worklet.js");
    const node = new AudioWorkletNode(context, "pcm-capture");
    node.port.onmessage = (event) => onSamples(event.data);
    source.connect(node);
    return node;
  }
  // Older browsers: ScriptProcessorNode runs on the main thread but does the same job.
  const node = context.createScriptProcessor(4096, 1, 1);
  node.onaudioprocess = (event) => onSamples(new Float32Array(event.inputBuffer.getChannelData(0)));
  source.connect(node);
  return node;
}

/**
 * Start streaming the microphone. Callbacks: onWindow(message), onDone(message), onError({code, detail}).
 * Resolves to {stop}: stop() sends the rest of the audio and {"type": "end"}; the server answers "done".
 */
export async function startLive({ model = null, apiKey = "", hopS = 1, onWindow, onDone, onError }) {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext({ sampleRate: RATE });
  const socket = new WebSocket(streamUrl({ model, apiKey, hopS }));
  socket.binaryType = "arraybuffer";
  let pending = [];
  let pendingLength = 0;
  let failed = false;

  const flush = (all) => {
    while (pendingLength >= FRAME || (all && pendingLength > 0)) {
      const size = Math.min(FRAME, pendingLength);
      const frame = new Float32Array(size);
      let filled = 0;
      while (filled < size) {
        const head = pending[0];
        const take = Math.min(head.length, size - filled);
        frame.set(head.subarray(0, take), filled);
        filled += take;
        if (take === head.length) pending.shift();
        else pending[0] = head.subarray(take);
      }
      pendingLength -= size;
      if (socket.readyState === WebSocket.OPEN) socket.send(frame.buffer);
    }
  };

  const release = () => {
    media.getTracks().forEach((track) => track.stop());
    if (context.state !== "closed") context.close();
  };

  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "window") onWindow(message);
    else if (message.type === "done") onDone(message);
    else if (message.type === "error") {
      failed = true;
      onError(message);
    }
  };
  socket.onclose = (event) => {
    release();
    if (!failed && event.code !== 1000) {
      onError({ code: "connection_closed", detail: `The live connection closed (code ${event.code}).` });
    }
  };

  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = () => reject(new Error("Could not open the live connection."));
  });
  socket.send(JSON.stringify({ format: "f32", sample_rate: context.sampleRate, hop_s: hopS }));

  const source = context.createMediaStreamSource(media);
  const node = await captureNode(context, source, (samples) => {
    pending.push(samples);
    pendingLength += samples.length;
    flush(false);
  });
  const silence = context.createGain();
  silence.gain.value = 0; // keeps the capture node pulled without playing the mic back
  node.connect(silence).connect(context.destination);

  return {
    stop() {
      node.disconnect();
      flush(true);
      pending = [];
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "end" }));
      media.getTracks().forEach((track) => track.stop());
    },
  };
}
