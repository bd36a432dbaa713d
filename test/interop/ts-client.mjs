// Drives a Berth pool's MCP endpoint with the official TypeScript SDK client
// and prints what it saw as one JSON document; e2e/mcp_interop_test.go runs
// it and checks the report.
//
//   node ts-client.mjs URL KEY [x-ms-apikey|bearer]
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, key, scheme = 'x-ms-apikey'] = process.argv.slice(2);
if (!url || !key) {
  console.error('usage: node ts-client.mjs URL KEY [x-ms-apikey|bearer]');
  process.exit(2);
}
const headers = scheme === 'bearer' ? { Authorization: `Bearer ${key}` } : { 'x-ms-apikey': key };

const report = {};
const client = new Client({ name: 'berth-interop-ts', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
await client.connect(transport);
report.protocolVersion = transport.protocolVersion;
report.sessionId = transport.sessionId;
report.serverInfo = client.getServerVersion();
report.capabilities = client.getServerCapabilities();

const { tools } = await client.listTools();
report.tools = tools.map((t) => t.name).sort();
report.toolsWithOutputSchema = tools.filter((t) => t.outputSchema).map((t) => t.name).sort();

// The SDK client validates structuredContent against each tool's
// outputSchema: a mismatch makes callTool throw.
const call = async (name, args, opts) => {
  const r = await client.callTool({ name, arguments: args }, undefined, opts);
  return { isError: !!r.isError, structured: r.structuredContent ?? null, text: r.content?.[0]?.text ?? '' };
};

const launch = await call('launchShell', {});
const env = launch.structured.environmentId;
report.launch = launch;

report.echo = await call('runShellCommandInRemoteEnvironment', {
  environmentId: env, shellCommand: 'cd /tmp && export FOO=bar && echo hello from ts; echo oops >&2; f() { return 3; }; f',
});
report.state = await call('runShellCommandInRemoteEnvironment', { environmentId: env, shellCommand: 'echo "$PWD $FOO"' });
report.argv = await call('runShellCommandInRemoteEnvironment', { environmentId: env, execCommandAndArgs: ['printf', '%s|', 'a b', 'c'] });

await call('runPythonCodeInRemoteEnvironment', { environmentId: env, pythonCode: 'x = 20' });
report.python = await call('runPythonCodeInRemoteEnvironment', { environmentId: env, pythonCode: 'print("py", x)\nx * 2 + 2' });

const progress = [];
report.streamed = await call(
  'runShellCommandInRemoteEnvironment',
  { environmentId: env, shellCommand: 'for i in 1 2 3; do echo tick $i; sleep 0.2; done' },
  { onprogress: (p) => progress.push(p) },
);
report.progress = progress;

report.upload = await call('uploadFileToRemoteEnvironment', { environmentId: env, path: 'dir/note.txt', content: 'hi from ts\n' });
report.list = await call('listFilesInRemoteEnvironment', { environmentId: env, path: 'dir' });
report.download = await call('downloadFileFromRemoteEnvironment', { environmentId: env, path: '/mnt/data/dir/note.txt' });

report.unknownEnv = await call('runShellCommandInRemoteEnvironment', { environmentId: 'env-doesnotexist', shellCommand: 'true' });
report.badArg = await call('runShellCommandInRemoteEnvironment', { environmentId: env, shellCommand: 'true', timeoutInSeconds: 'soon' });
report.close = await call('closeRemoteEnvironment', { environmentId: env });
report.afterClose = await call('runPythonCodeInRemoteEnvironment', { environmentId: env, pythonCode: '1' });

await transport.terminateSession();
await client.close();
console.log(JSON.stringify(report));
