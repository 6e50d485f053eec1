// The OpenAI TS SDK's Responses API: create (JSON), a stream, a previous_response_id chain, and
// another project's key (OTHER_API_KEY) asking for this key's response, which must be a 404.
import { describeError, main, model, openaiClient } from './openai_common.mjs';

const usageOf = (r) => ({ input_tokens: r.usage?.input_tokens ?? null, output_tokens: r.usage?.output_tokens ?? null });

await main(async () => {
  const client = openaiClient();
  const first = await client.responses.create({ model, input: 'Say hello' });
  const json = { id: first.id, status: first.status, text: first.output_text, usage: usageOf(first) };

  const events = [];
  let streamed = '';
  let completed = null;
  const stream = await client.responses.create({ model, input: 'Say hello again', stream: true });
  for await (const event of stream) {
    events.push(event.type);
    if (event.type === 'response.output_text.delta') streamed += event.delta;
    if (event.type === 'response.completed') completed = event.response;
  }
  const streamOut = { event_types: [...new Set(events)], text: streamed, id: completed?.id ?? null,
                      usage: completed ? usageOf(completed) : null };

  const next = await client.responses.create({ model, input: 'And then?', previous_response_id: first.id });
  const chain = { id: next.id, previous_response_id: next.previous_response_id ?? null, text: next.output_text };

  let other = null;
  const otherKey = process.env.OTHER_API_KEY;
  if (otherKey) {
    try {
      const leaked = await openaiClient(otherKey).responses.retrieve(first.id);
      other = { status: 200, id: leaked.id };
    } catch (err) {
      other = describeError(err);
    }
  }
  return { json, stream: streamOut, chain, other_project: other };
});
