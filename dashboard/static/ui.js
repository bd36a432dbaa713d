// Progressive enhancement for Berth's dashboard: every page works without
// it; this adds the live log view, the traffic sum, confirmations, copy
// buttons and Ctrl+Enter in the console.

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

function confirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
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

trafficEditor();
logView();
confirmations();
copyButtons();
consoleKeys();
