// Talks to an app behind Berth's gateway with the official TypeScript SDK
// client and prints a JSON report; e2e/apps_test.go runs it.
//
//   node ts-app-client.mjs URL
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url] = process.argv.slice(2);
if (!url) {
  console.error('usage: node ts-app-client.mjs URL');
  process.exit(2);
}
const client = new Client({ name: 'berth-app-interop-ts', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(url));
const started = Date.now();
await client.connect(transport);
const report = {
  connectMillis: Date.now() - started,
  sessionId: transport.sessionId,
  serverInfo: client.getServerVersion(),
};
const { tools } = await client.listTools();
report.tools = tools.map((t) => t.name).sort();
const r = await client.callTool({ name: 'test_simple_text', arguments: {} });
report.call = { isError: !!r.isError, text: r.content?.[0]?.text ?? '' };
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(report));
