// Result cards: pending, result (verdict, gauge, facts, warnings, timeline) and error. DOM only, no fetching.

const SVG_NS = "http://www.w3.org/2000/svg";

const HINTS = {
  unauthorized: "Enter the server's API key under Settings, then press Retry.",
  undecodable_audio: "Send speech audio: WAV, FLAC, MP3, OGG, Opus, M4A/AAC or WebM.",
  no_audio_stream: "The file has no audio track. Send speech audio.",
  unsupported_media_type: "Send speech audio: WAV, FLAC, MP3, OGG, Opus, M4A/AAC or WebM.",
  queue_full: "The server is busy. Retry in a moment.",
  overloaded: "The server is busy with other audio. Retry when the detail says.",
  shutting_down: "The server is restarting. Retry in a moment.",
  deadline_exceeded: "The server took too long. Retry later or send shorter audio.",
  network_error: "Check that the server is running, then retry.",
};

const RETRYABLE = new Set([
  "unauthorized",
  "queue_full",
  "overloaded",
  "shutting_down",
  "not_ready",
  "deadline_exceeded",
  "network_error",
]);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** 0.9996 is ">99.9%", never a rounded-up "100.0%" that would claim certainty (shown and announced alike). */
export const percent = (p) => (p > 0.999 ? ">99.9%" : p < 0.001 ? "<0.1%" : `${(p * 100).toFixed(1)}%`);
const probability = (p) => (p < 0.0001 ? "<0.0001" : p.toFixed(4));
const seconds = (s) => `${s.toFixed(2)} s`;

/** The API's details mark names and values as `code`: text nodes and <code> elements, never HTML. */
function richText(text) {
  return String(text).split("`").map((part, i) => (i % 2 ? el("code", {}, part) : document.createTextNode(part)));
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Green (real) through amber to red (fake), dark enough for 3:1 against the card. */
export function probabilityColour(p) {
  return `hsl(${Math.round(130 * (1 - p))} 70% 36%)`;
}

/** A new card in the "analysing" state; returns the <li>. */
export function pendingCard(filename, blob) {
  const head = el(
    "header",
    { class: "card-head" },
    el("h3", { class: "card-title" }, filename),
    el("p", { class: "card-meta" }, `${blob.type || "unknown type"} · ${bytes(blob.size)}`),
  );
  const card = el("li", { class: "card", "aria-busy": "true" }, head, el("div", { class: "card-body" }));
  setPending(card);
  return card;
}

export function setPending(card) {
  card.dataset.state = "pending";
  card.setAttribute("aria-busy", "true");
  card.querySelector(".card-body").replaceChildren(
    el(
      "p",
      { class: "pending" },
      el("span", { class: "spinner", "aria-hidden": "true" }),
      el("span", { class: "pending-text" }, "Analysing…"),
    ),
  );
}

/** Keep a pending card saying what is happening: how long the audio is (when the browser can tell) and how
 * long the server has been at it, so a long recording never looks stuck. */
export function updatePending(card, elapsedS, durationS) {
  const text = card.querySelector(".pending-text");
  if (!text) return;
  const what = durationS ? `Analysing ${formatDuration(durationS)} of audio` : "Analysing";
  const long = durationS > 60 ? " Long recordings are scored 4 seconds at a time; this can take a while." : "";
  text.textContent = elapsedS < 2 ? `${what}…` : `${what}… ${Math.round(elapsedS)} s so far.${long}`;
}

function formatDuration(s) {
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** "synthetic speech from 12.0 s to 17.4 s": the same words as the CLI. */
export function describeSegment(segment) {
  return `synthetic speech from ${segment.start_s.toFixed(1)} s to ${segment.end_s.toFixed(1)} s`;
}

function gauge(confidence, verdictClass) {
  const arc = "M 10 60 A 50 50 0 0 1 110 60";
  const value = percent(confidence);
  return el(
    "figure",
    { class: `gauge ${verdictClass}` },
    svg(
      "svg",
      { viewBox: "0 0 120 66", role: "img", "aria-label": `Confidence ${value}` },
      svg("path", { d: arc, class: "gauge-track", pathLength: "100" }),
      svg("path", { d: arc, class: "gauge-fill", pathLength: "100", "stroke-dasharray": `${confidence * 100} 100` }),
    ),
    el("figcaption", {}, el("span", { class: "gauge-value" }, value), el("span", { class: "gauge-label" }, "confidence")),
  );
}

function facts(result, blob) {
  const judged = result.fake_probability !== null;
  const rows = [
    ["Fake probability", judged ? probability(result.fake_probability) : "—"],
    ["Score", judged ? `${result.score.toFixed(2)} (positive = human)` : "—"],
    ["Duration", `${seconds(result.duration_s)} (${seconds(result.speech_s)} of speech)`],
    ["Sample rate", `${result.sample_rate.toLocaleString("en")} Hz`],
    ["Format", `${blob.type || "unknown type"} · ${bytes(blob.size)}`],
    ["Model", result.model],
    ["Server time", `${Math.round(result.timing.total_ms)} ms`],
  ];
  return el("dl", { class: "facts" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function warnings(list) {
  if (!list.length) return null;
  return el(
    "div",
    { class: "warnings" },
    el("h4", {}, "Warnings"),
    el("ul", {}, ...list.map((w) => el("li", {}, w))),
  );
}

function niceStep(span) {
  const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300];
  return steps.find((s) => span / s <= 8) || 600;
}

const UNCERTAIN = "hsl(220 8% 50%)";

/** A window that overlaps a synthetic segment without lying inside it: it was not called fake, yet part
 * of it is synthetic, so the speech only it covers is not shown as real (grey, not green). */
function coversSyntheticInPart(w, segments) {
  return segments.some((s) => w.start_s < s.end_s && w.end_s > s.start_s && (w.start_s < s.start_s || w.end_s > s.end_s));
}

/** SVG lollipop chart: one stem + dot per window at its centre, height and colour = fake probability. */
export function timeline(windows, duration, width = 640, segments = []) {
  const W = Math.round(Math.min(760, Math.max(300, width))), H = 200, left = 52, right = 14, top = 12, bottom = 42;
  const plotW = W - left - right, plotH = H - top - bottom;
  const end = Math.max(duration, ...windows.map((w) => w.end_s));
  const x = (t) => left + (t / end) * plotW;
  const y = (p) => top + (1 - p) * plotH;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "timeline-svg", role: "img" });

  chart.append(
    svg("rect", { x: left, y: y(1), width: plotW, height: plotH / 2, class: "band-fake" }),
    svg("rect", { x: left, y: y(0.5), width: plotW, height: plotH / 2, class: "band-real" }),
    svg("text", { x: W - right - 6, y: y(1) + 14, class: "band-label", "text-anchor": "end" }, "FAKE"),
    svg("text", { x: W - right - 6, y: y(0) - 6, class: "band-label", "text-anchor": "end" }, "REAL"),
  );
  for (const segment of segments) {
    const x0 = x(segment.start_s), x1 = x(segment.end_s);
    chart.append(
      svg(
        "g",
        { class: "segment", "data-start": segment.start_s, "data-end": segment.end_s },
        svg("title", {}, describeSegment(segment)),
        svg("rect", { x: x0, y: top, width: Math.max(2, x1 - x0), height: plotH, class: "segment-band" }),
        svg("text", { x: (x0 + x1) / 2, y: top + 14, class: "segment-label", "text-anchor": "middle" }, "synthetic"),
      ),
    );
  }
  for (const p of [0, 0.5, 1]) {
    chart.append(
      svg("line", { x1: left, x2: W - right, y1: y(p), y2: y(p), class: p === 0.5 ? "grid mid" : "grid" }),
      svg("text", { x: left - 8, y: y(p) + 4, class: "tick", "text-anchor": "end" }, p.toString()),
    );
  }
  const step = niceStep(end);
  for (let t = 0; t <= end + 1e-9; t += step) {
    chart.append(
      svg("line", { x1: x(t), x2: x(t), y1: top + plotH, y2: top + plotH + 5, class: "axis" }),
      svg("text", { x: x(t), y: top + plotH + 18, class: "tick", "text-anchor": "middle" }, `${+t.toFixed(1)}`),
    );
  }
  chart.append(
    svg("line", { x1: left, x2: W - right, y1: top + plotH, y2: top + plotH, class: "axis" }),
    svg("text", { x: left + plotW / 2, y: H - 4, class: "axis-title", "text-anchor": "middle" }, "time (s)"),
    svg(
      "text",
      { x: 14, y: top + plotH / 2, class: "axis-title", "text-anchor": "middle", transform: `rotate(-90 14 ${top + plotH / 2})` },
      "fake probability",
    ),
  );
  for (const w of windows) {
    const cx = x((w.start_s + w.end_s) / 2), cy = y(w.fake_probability);
    const uncertain = coversSyntheticInPart(w, segments);
    const colour = uncertain ? UNCERTAIN : probabilityColour(w.fake_probability);
    const label =
      `${w.start_s.toFixed(1)}–${w.end_s.toFixed(1)} s: fake probability ${w.fake_probability.toFixed(3)}` +
      (uncertain ? "; it also covers synthetic speech, so it does not show that the rest of it is real" : "");
    chart.append(
      svg(
        "g",
        { class: uncertain ? "window uncertain" : "window", "data-start": w.start_s, "data-end": w.end_s },
        svg("title", {}, label),
        svg("line", { x1: cx, x2: cx, y1: top + plotH, y2: cy, stroke: colour, class: "stem" }),
        svg("circle", { cx, cy, r: 6, fill: colour, class: "dot" }),
      ),
    );
  }
  const probs = windows.map((w) => w.fake_probability);
  const marked = segments.length ? ` Marked as synthetic: ${segments.map(describeSegment).join("; ")}.` : "";
  chart.setAttribute(
    "aria-label",
    `Timeline of ${windows.length} windows over ${end.toFixed(1)} s; fake probability from ` +
      `${Math.min(...probs).toFixed(3)} to ${Math.max(...probs).toFixed(3)}.${marked}`,
  );
  const table = el(
    "table",
    {},
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Window"), el("th", { scope: "col" }, "Fake probability"))),
    el(
      "tbody",
      {},
      ...windows.map((w) =>
        el(
          "tr",
          {},
          el("td", {}, `${w.start_s.toFixed(2)}–${w.end_s.toFixed(2)} s${coversSyntheticInPart(w, segments) ? " (partly synthetic)" : ""}`),
          el("td", {}, probability(w.fake_probability)),
        ),
      ),
    ),
  );
  return el(
    "figure",
    { class: "timeline" },
    el("figcaption", {}, `Timeline: fake probability of each 4-second window (${windows.length} windows)`),
    chart,
    el("details", { class: "window-table" }, el("summary", {}, "Window scores as a table"), table),
  );
}

const VERDICTS = {
  FAKE: { className: "is-fake", icon: "⚠ ", text: "Likely synthetic speech" },
  REAL: { className: "is-real", icon: "✓ ", text: "Likely a human voice" },
  INCONCLUSIVE: { className: "is-inconclusive", icon: "? ", text: "Not enough speech to judge" },
};

/** What an INCONCLUSIVE result leaned to, worded so it cannot pass for the verdict; null without a lean. */
export function describeLeaning(result) {
  if (!result.leaning) return null;
  return (
    `The model leaned ${result.leaning} (fake probability ${probability(result.leaning_fake_probability)}), ` +
    "but on this little speech that is unreliable: not a verdict."
  );
}

/** The verdict box: the label, a line saying what it means, and for FAKE where the synthetic speech is. */
function verdictBox(result) {
  const v = VERDICTS[result.prediction];
  const lines = result.prediction === "INCONCLUSIVE" ? [capitalise(result.reason)] : [v.text];
  for (const segment of result.segments || []) lines.push(capitalise(describeSegment(segment)));
  const leaning = describeLeaning(result);
  return el(
    "div",
    { class: `verdict ${v.className}` },
    el("p", { class: "verdict-label" }, el("span", { "aria-hidden": "true" }, v.icon), result.prediction),
    ...lines.map((line) => el("p", { class: "verdict-text" }, line)),
    ...(leaning ? [el("p", { class: "verdict-leaning" }, leaning)] : []),
  );
}

const capitalise = (text) => text.charAt(0).toUpperCase() + text.slice(1);

/** Fill a card with a PredictResponse. */
export function showResult(card, result, blob) {
  const verdictClass = VERDICTS[result.prediction].className;
  const judged = result.prediction !== "INCONCLUSIVE";
  const summary = [verdictBox(result)];
  if (judged) summary.push(gauge(result.confidence, verdictClass));
  summary.push(facts(result, blob));
  const body = [el("div", { class: "summary" }, ...summary)];
  const warn = warnings(result.warnings);
  if (warn) body.push(warn);
  const width = card.querySelector(".card-body").clientWidth;
  if (result.windows.length > 1) body.push(timeline(result.windows, result.duration_s, width, result.segments));
  card.dataset.state = "done";
  card.classList.add(verdictClass);
  card.removeAttribute("aria-busy");
  card.querySelector(".card-body").replaceChildren(...body);
}

/** Fill a card with an ApiProblem; `retry` is called by the Retry button where retrying can help. */
export function showError(card, problem, retry) {
  const status = problem.status ? `HTTP ${problem.status}` : "no response";
  const children = [
    el("p", { class: "problem-title" }, el("span", { "aria-hidden": "true" }, "✕ "), "Could not analyse this audio"),
    el("p", { class: "problem-code" }, el("code", {}, problem.code), ` · ${status}`),
    el("p", { class: "problem-detail" }, ...richText(problem.detail)),
  ];
  if (problem.errorId) children.push(el("p", { class: "hint" }, `Error id: ${problem.errorId}`));
  if (HINTS[problem.code]) children.push(el("p", { class: "hint" }, HINTS[problem.code]));
  if (retry && RETRYABLE.has(problem.code)) {
    const button = el("button", { type: "button", class: "retry" }, "Retry");
    button.addEventListener("click", retry);
    children.push(button);
  }
  card.dataset.state = "error";
  card.removeAttribute("aria-busy");
  card.querySelector(".card-body").replaceChildren(el("div", { class: "problem" }, ...children));
}

/** A live card: the latest window's verdict, a rolling timeline, and the overall verdict once done. */
export function liveCard() {
  const head = el(
    "header",
    { class: "card-head" },
    el("h3", { class: "card-title" }, "Live microphone"),
    el("p", { class: "card-meta" }, "streaming · 16 kHz"),
  );
  const card = el("li", { class: "card live-card" }, head, el("div", { class: "card-body" }));
  card.querySelector(".card-body").replaceChildren(
    el("p", { class: "pending" }, el("span", { class: "spinner", "aria-hidden": "true" }), "Listening… first verdict after 4 seconds."),
  );
  card.dataset.state = "live";
  return card;
}

/** Redraw a live card from the windows so far; with `summary` (the "done" message) show the final verdict. */
export function showLive(card, windows, summary = null) {
  const latest = windows[windows.length - 1];
  const final = Boolean(summary && summary.prediction);
  const shown = final
    ? summary
    : { prediction: latest.prediction, fake_probability: latest.fake_probability, segments: [] };
  const verdictClass = VERDICTS[shown.prediction].className;
  const judged = shown.prediction !== "INCONCLUSIVE";
  const verdict = verdictBox(shown);
  verdict.append(
    el("p", { class: "verdict-scope" }, final ? `Whole stream, ${windows.length} windows` : `Last 4 s (window ${latest.index + 1})`),
  );
  const rows = [
    ["Fake probability", judged ? probability(shown.fake_probability) : "—"],
    ["Listened", seconds(latest.end_s)],
    ["Windows", String(windows.length)],
  ];
  const facts = el("dl", { class: "facts" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const pFake = shown.fake_probability;
  const body = [el("div", { class: "summary" }, verdict)];
  if (judged) body[0].append(gauge(shown.prediction === "FAKE" ? pFake : 1 - pFake, verdictClass));
  body[0].append(facts);
  body.push(timeline(windows, latest.end_s, card.querySelector(".card-body").clientWidth, shown.segments));
  card.classList.remove("is-fake", "is-real", "is-inconclusive");
  card.classList.add(verdictClass);
  card.dataset.state = final ? "done" : "live";
  card.querySelector(".card-body").replaceChildren(...body);
}
