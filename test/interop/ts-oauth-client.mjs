// Calls an app protected by OAuth (berth app deploy --auth oidc) with the
// official TypeScript SDK's client_credentials provider, which finds the
// authorization server through the 401 and the app's protected resource
// metadata; prints a JSON report. e2e/app_auth_test.go runs it.
//
//   node ts-oauth-client.mjs URL CLIENT_ID CLIENT_SECRET SCOPE
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const [url, clientId, clientSecret, scope] = process.argv.slice(2);
if (!url || !clientId || !clientSecret) {
  console.error('usage: node ts-oauth-client.mjs URL CLIENT_ID CLIENT_SECRET [SCOPE]');
  process.exit(2);
}
const statuses = [];
const recordingFetch = async (input, init) => {
  const res = await fetch(input, init);
  statuses.push(`${init?.method || 'GET'} ${new URL(input).pathname} ${res.status}`);
  return res;
};
const authProvider = new ClientCredentialsProvider({ clientId, clientSecret, scope: scope || undefined });
const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider, fetch: recordingFetch });
const client = new Client({ name: 'berth-oauth-interop-ts', version: '1.0.0' });
await client.connect(transport);
const r = await client.callTool({ name: 'headers', arguments: {} });
const seen = JSON.parse(r.content?.[0]?.text ?? '{}');
await client.close();
console.log(JSON.stringify({ statuses, seen }));
