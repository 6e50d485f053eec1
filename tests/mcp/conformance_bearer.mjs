// Preloaded into the MCP conformance CLI (node --import): every request it sends carries
// `Authorization: Bearer $LLMGW_CONFORMANCE_KEY`. The suite's scenarios target servers without
// authentication; llmgw's /mcp needs a key, and with one a refusal can only come from the
// Host/Origin check under test (not from a missing key).
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const root = join(process.env.LLMGW_CLIENTS_DIR, "node_modules", "@modelcontextprotocol",
                  "conformance", "package.json");
const undici = await import(pathToFileURL(createRequire(root).resolve("undici")).href);
const key = process.env.LLMGW_CONFORMANCE_KEY;

undici.setGlobalDispatcher(new undici.Agent().compose((dispatch) => (opts, handler) => {
  const headers = Array.isArray(opts.headers) ? Object.fromEntries(
    opts.headers.reduce((pairs, v, i, all) => (i % 2 ? pairs : [...pairs, [v, all[i + 1]]]), []))
    : { ...(opts.headers ?? {}) };
  headers.authorization = `Bearer ${key}`;
  return dispatch({ ...opts, headers }, handler);
}));
