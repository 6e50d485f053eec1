// A stream: the text deltas, the event types in order, and the final message's usage (cache fields too).
import { client, main, model } from './sdk_common.mjs';

await main(async () => {
  const stream = client().messages.stream({
    model, max_tokens: 200,
    // Long enough (20 words) for a test to script cache reads and writes within the prompt.
    system: [{ type: 'text', cache_control: { type: 'ephemeral' },
      text: 'You are terse. Answer in as few words as you can, and never explain an answer unless asked.' }],
    messages: [{ role: 'user', content: 'Count to three.' }],
  });
  const events = [];
  let text = '';
  for await (const event of stream) {
    events.push(event.type);
    if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') text += event.delta.text;
  }
  const final = await stream.finalMessage();
  const u = final.usage;
  return {
    text, events, stop_reason: final.stop_reason,
    usage: { input_tokens: u.input_tokens, output_tokens: u.output_tokens,
      cache_read_input_tokens: u.cache_read_input_tokens ?? null,
      cache_creation_input_tokens: u.cache_creation_input_tokens ?? null },
  };
});
