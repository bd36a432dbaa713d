// Talks to the TS SDK's example MCP server (simpleStreamableHttp) behind
// Berth's gateway with the official TypeScript SDK client: lists its tools
// and calls greet. e2e/app_image_node_test.go runs it.
//
//   node ts-greet-client.mjs URL
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url] = process.argv.slice(2);
if (!url) {
  console.error('usage: node ts-greet-client.mjs URL');
  process.exit(2);
}
const client = new Client({ name: 'berth-image-interop-ts', version: '1.0.0' });
const transport = new StreamableHTTPClientTransport(new URL(url));
await client.connect(transport);
const report = { sessionId: transport.sessionId, serverInfo: client.getServerVersion() };
const { tools } = await client.listTools();
report.tools = tools.map((t) => t.name).sort();
const r = await client.callTool({ name: 'greet', arguments: { name: 'Berth' } });
report.call = { isError: !!r.isError, text: r.content?.[0]?.text ?? '' };
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(report));
