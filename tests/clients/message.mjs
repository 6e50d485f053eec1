// A non-streamed message: what the SDK parsed, and the gateway's x-llmgw-* headers.
import { client, main, model } from './sdk_common.mjs';

await main(async () => {
  const { data, response } = await client().messages.create({
    model, max_tokens: 200, messages: [{ role: 'user', content: 'Say hello in five words.' }],
  }).withResponse();
  return {
    id: data.id, type: data.type, role: data.role, model: data.model, stop_reason: data.stop_reason,
    content: data.content, usage: data.usage,
    headers: Object.fromEntries([...response.headers].filter(([k]) => k.startsWith('x-llmgw-'))),
  };
});
