// Progressive enhancement for Berth's dashboard: every page works without
// it; this adds the live log view, the traffic sum, confirmations, copy
// buttons, the console's streamed output and Ctrl+Enter in the console.

const MAX_LINES = 1000; // the log view keeps this many lines in the DOM

function trafficEditor() {
  const form = document.getElementById("traffic");
  if (!form) return;
  const out = document.getElementById("traffic-sum");
  const save = document.getElementById("save-traffic");
  const update = () => {
    let sum = 0;
    for (const el of form.querySelectorAll("input.pct")) sum += Number(el.value || 0);
    out.textContent = String(sum);
    out.classList.toggle("bad", sum !== 100);
    save.disabled = sum !== 100;
    save.title = sum === 100 ? "" : "The percentages must add up to 100";
  };
  form.addEventListener("input", update);
  update();
}

function logView() {
  const box = document.getElementById("logs");
  if (!box) return;
  const follow = document.getElementById("log-follow");
  const search = document.getElementById("log-search");
  const status = document.getElementById("log-status");
  document.getElementById("log-max").textContent = String(MAX_LINES);
  let query = "";
  const matches = (el) => !query || el.textContent.toLowerCase().includes(query);
  search.addEventListener("input", () => {
    query = search.value.trim().toLowerCase();
    for (const el of box.children) el.hidden = !matches(el);
  });
  follow.addEventListener("change", () => { if (follow.checked) box.scrollTop = box.scrollHeight; });
  const add = (e) => {
    const line = document.createElement("div");
    line.className = "line s-" + (e.stream || "stdout");
    const t = document.createElement("time");
    t.textContent = (e.time || "").slice(11, 23);
    const src = document.createElement("span");
    src.className = "src";
    src.textContent = e.replica || e.revision || "";
    const text = document.createElement("span");
    text.textContent = e.line;
    line.append(t, " ", src, " ", text);
    line.hidden = !matches(line);
    box.append(line);
    while (box.childElementCount > MAX_LINES) box.firstElementChild.remove();
  };
  const connect = async () => {
    const ctl = new AbortController();
    window.addEventListener("pagehide", () => ctl.abort(), {once: true});
    try {
      const res = await fetch(box.dataset.src, {signal: ctl.signal, headers: {"Accept": "application/x-ndjson"}});
      if (!res.ok) throw new Error("HTTP " + res.status);
      status.textContent = "live";
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        const parts = (rest + value).split("\n");
        rest = parts.pop();
        for (const p of parts) { if (p.trim()) { try { add(JSON.parse(p)); } catch (_) { /* a partial line */ } } }
        if (follow.checked) box.scrollTop = box.scrollHeight;
        box.dataset.count = String(box.childElementCount);
      }
      status.textContent = "ended; reconnecting…";
    } catch (e) {
      if (ctl.signal.aborted) return;
      status.textContent = "disconnected (" + e.message + "); reconnecting…";
    }
    setTimeout(() => { box.replaceChildren(); connect(); }, 2000);
  };
  connect();
}

function confirmations(root = document) {
  for (const form of root.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (ev) => { if (!confirm(form.dataset.confirm)) ev.preventDefault(); });
  }
}

function copyButtons() {
  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.addEventListener("click", async () => {
      const text = document.getElementById(b.dataset.copy).textContent;
      try { await navigator.clipboard.writeText(text); b.textContent = "Copied"; } catch (_) { b.textContent = "Select and copy"; }
    });
  }
}

function consoleKeys() {
  const code = document.getElementById("code");
  if (!code) return;
  code.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); code.form.requestSubmit(); }
  });
}

// ndjsonLines reads an NDJSON response, calling each(value) per line.
async function ndjsonLines(res, each) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  for (;;) {
    const {value, done} = await reader.read();
    const parts = (rest + (value || "")).split("\n");
    rest = done ? "" : parts.pop();
    for (const line of parts) { if (line.trim()) each(JSON.parse(line)); }
    if (done) return;
  }
}

// errorOf is the message of a dashboard page that answered instead of a
// stream (signed out, a stale form).
async function errorOf(res) {
  const doc = new DOMParser().parseFromString(await res.text(), "text/html");
  const msg = doc.querySelector(".alert.error");
  return msg ? msg.textContent.trim() : "HTTP " + res.status;
}

// consoleStream runs the console's code asking for NDJSON, and appends
// stdout and stderr to the page as they come; when it ends, it shows the
// status and result and refreshes the sessions and the session's files.
function consoleStream() {
  const form = document.getElementById("console-form");
  if (!form || !window.TextDecoderStream) return;
  const button = document.getElementById("run");
  const el = (tag, props) => Object.assign(document.createElement(tag), props || {});
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (button.disabled) return;
    button.disabled = true;
    for (const id of ["result", "console-error"]) document.getElementById(id)?.remove();
    const id = form.querySelector("[name=identifier]").value.trim();
    const line = el("p", {id: "exec-line", textContent: "Running…"});
    const stdout = el("pre", {id: "stdout"});
    const box = el("div", {className: "result", id: "result"});
    box.setAttribute("aria-live", "polite");
    box.append(line, el("h3", {textContent: "stdout"}), stdout);
    form.after(box);
    let stderr = null, final = null;
    const append = (pre, text) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(text);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    };
    const errStream = () => {
      if (!stderr) {
        stderr = el("pre", {id: "stderr", className: "stderr"});
        stdout.after(el("h3", {textContent: "stderr"}), stderr);
      }
      return stderr;
    };
    try {
      const res = await fetch(form.action, {method: "POST", body: new URLSearchParams(new FormData(form)),
        headers: {"Accept": "application/x-ndjson", "X-CSRF-Token": form.querySelector("input[name=csrf]").value}});
      if (!res.ok || !(res.headers.get("Content-Type") || "").includes("ndjson")) throw new Error(await errorOf(res));
      await ndjsonLines(res, (e) => {
        if (typeof e.stdout === "string") append(stdout, e.stdout);
        else if (typeof e.stderr === "string") append(errStream(), e.stderr);
        else final = e;
      });
      if (!final) throw new Error("the execution ended without a result");
      if (final.error) throw new Error(final.error.message || final.error.code);
      history.replaceState(null, "", form.dataset.page + "?identifier=" + encodeURIComponent(id) + "#console");
      await refresh(form.dataset.page, id);
      showResult(final.properties || {}, {line, stdout, errStream, box, el});
    } catch (e) {
      line.remove();
      box.before(el("p", {className: "alert error", id: "console-error", role: "alert", textContent: e.message}));
    } finally {
      button.disabled = false;
    }
  });
}

// showResult draws an execution's answer as the server-rendered page does.
function showResult(p, {line, stdout, errStream, box, el}) {
  const status = el("strong", {id: "exec-status", textContent: p.status});
  const parts = ["Status ", status];
  if (p.exitCode !== undefined && p.exitCode !== null) parts.push(" · exit code " + p.exitCode);
  parts.push(" · " + p.executionTimeInMilliseconds + " ms");
  if (p.error) parts.push(" · ", el("span", {className: "badge warn", textContent: p.error.type}), " " + p.error.message);
  line.replaceChildren(...parts);
  stdout.textContent = p.stdout || "";
  if (p.stderr) errStream().textContent = p.stderr;
  if (p.stdoutTruncated || p.stderrTruncated) line.append(" · output truncated at the pool's cap");
  if (p.result !== null && p.result !== undefined) {
    box.append(el("h3", {textContent: "result"}), el("pre", {id: "value", textContent: JSON.stringify(p.result)}));
  }
}

// refresh replaces the pool's counts, the sessions table and the
// session's files with the pool page's current ones.
async function refresh(page, id) {
  try {
    const res = await fetch(page + "?identifier=" + encodeURIComponent(id));
    if (!res.ok) return;
    const doc = new DOMParser().parseFromString(await res.text(), "text/html");
    for (const sel of ["pool-stats", "sessions-section", "console-files"]) {
      const fresh = doc.getElementById(sel), old = document.getElementById(sel);
      if (fresh && old) { old.replaceWith(fresh); confirmations(fresh); }
    }
  } catch (_) { /* the page stays as it was */ }
}

// imageDeploy posts the image form asking for NDJSON, and draws each
// layer's pull progress as it comes, then the new revision or the error.
function imageDeploy() {
  const form = document.getElementById("image-form");
  if (!form) return;
  const table = document.getElementById("pull-progress");
  const status = document.getElementById("pull-status");
  const errBox = document.getElementById("pull-error");
  const okBox = document.getElementById("pull-result");
  const button = document.getElementById("deploy-image-button");
  const rows = new Map();
  const size = (n) => n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B";
  const show = (p) => {
    let row = rows.get(p.layer);
    if (!row) {
      row = table.tBodies[0].insertRow();
      for (let i = 0; i < 4; i++) row.insertCell();
      row.cells[0].innerHTML = "<code></code>";
      row.cells[0].firstChild.textContent = (p.layer || "").replace("sha256:", "").slice(0, 12);
      row.cells[0].title = p.layer;
      row.cells[3].append(document.createElement("progress"));
      rows.set(p.layer, row);
      table.hidden = false;
    }
    row.dataset.status = p.status;
    row.cells[1].textContent = p.status;
    row.cells[2].textContent = p.total ? size(p.done) + " / " + size(p.total) : size(p.done);
    const bar = row.cells[3].firstChild;
    bar.max = p.total || 1;
    bar.value = ["downloaded", "cached", "unpacking", "unpacked"].includes(p.status) ? bar.max : Math.min(p.done, bar.max);
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    rows.clear();
    table.tBodies[0].replaceChildren();
    table.hidden = errBox.hidden = okBox.hidden = true;
    button.disabled = true;
    status.textContent = "pulling…";
    const csrf = form.querySelector("input[name=csrf]").value;
    try {
      const res = await fetch(form.action, {method: "POST", body: new URLSearchParams(new FormData(form)),
        headers: {"Accept": "application/x-ndjson", "X-CSRF-Token": csrf}});
      if (!res.ok || !(res.headers.get("Content-Type") || "").includes("ndjson")) {
        const doc = new DOMParser().parseFromString(await res.text(), "text/html");
        const msg = doc.querySelector(".alert.error");
        throw new Error(msg ? msg.textContent.trim() : "HTTP " + res.status);
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "", done = false;
      while (!done) {
        const chunk = await reader.read();
        done = chunk.done;
        const parts = (rest + (chunk.value || "")).split("\n");
        rest = done ? "" : parts.pop();
        for (const line of parts) {
          if (!line.trim()) continue;
          const e = JSON.parse(line);
          if (e.progress) show(e.progress);
          if (e.error) throw new Error(e.error);
          if (e.result) {
            const rev = e.result.revision.name;
            status.textContent = "done";
            okBox.replaceChildren("Revision ", Object.assign(document.createElement("code"), {textContent: rev}),
              " created from ", Object.assign(document.createElement("code"), {textContent: (e.result.revision.config.source || {}).image || "the image"}), ". ",
              Object.assign(document.createElement("a"), {href: "/ui/apps/" + encodeURIComponent(form.dataset.app) + "?deployed=" + encodeURIComponent(rev), textContent: "Show it"}));
            okBox.dataset.revision = rev;
            okBox.hidden = false;
            return;
          }
        }
      }
      throw new Error("the deploy ended without a result");
    } catch (e) {
      status.textContent = "failed";
      errBox.textContent = e.message;
      errBox.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

trafficEditor();
imageDeploy();
logView();
confirmations();
copyButtons();
consoleKeys();
consoleStream();
