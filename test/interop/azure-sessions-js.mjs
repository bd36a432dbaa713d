// Replays @langchain/azure-dynamic-sessions' SessionsPythonREPLTool
// (langchain-ai/langchainjs libs/langchain-azure-dynamic-sessions/src/tools.ts
// at 0c94c67d) with Node's own fetch, FormData and Blob: the requests that
// package makes, framed by the same runtime (undici). The package itself is
// not on npm. Usage: node azure-sessions-js.mjs ENDPOINT KEY SESSION_ID
const [endpoint, key, sessionId] = process.argv.slice(2);

function buildUrl(path) {
  let url = `${endpoint}${endpoint.endsWith("/") ? "" : "/"}${path}`;
  url += url.includes("?") ? "&" : "?";
  url += `identifier=${encodeURIComponent(sessionId)}`;
  url += `&api-version=2024-02-02-preview`;
  return url;
}

async function check(response) {
  if (!response.ok) {
    throw new Error(`HTTP error! status: ${response.status} ${await response.text()}`);
  }
  return response;
}

async function call(pythonCode) {
  const response = await check(await fetch(buildUrl("code/execute"), {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
    body: JSON.stringify({ properties: { codeInputType: "inline", executionType: "synchronous", code: pythonCode } }),
  }));
  const properties = (await response.json()).properties;
  return `Result:\n${properties.result}\n\nStdout:\n${properties.stdout}\n\nStderr:\n${properties.stderr}`;
}

async function uploadFile(data, remoteFilename) {
  const formData = new FormData();
  formData.append("file", data, remoteFilename);
  const response = await check(await fetch(buildUrl("files/upload"), {
    method: "POST", headers: { Authorization: `Bearer ${key}` }, body: formData,
  }));
  return (await response.json()).value[0].properties;
}

async function downloadFile(remoteFilename) {
  const response = await check(await fetch(buildUrl(`files/content/${remoteFilename}`), {
    method: "GET", headers: { Authorization: `Bearer ${key}` },
  }));
  return await (await response.blob()).text();
}

async function listFiles() {
  const response = await check(await fetch(buildUrl("files"), {
    method: "GET", headers: { authorization: `Bearer ${key}` },
  }));
  return (await response.json()).value.map((x) => x.properties);
}

const out = {};
out.call = await call("import math\nprint('js')\nmath.prod([6, 7])");
out.upload = await uploadFile(new Blob(["héllo from js\n"]), "greeting.txt");
out.state = await call("open('/mnt/data/greeting.txt', encoding='utf-8').read().strip()");
out.download = await downloadFile("greeting.txt");
out.list = (await listFiles()).map((f) => `${f.filename}:${f.size}`);
console.log(JSON.stringify(out));
