// A thinking + tool round trip: the first call enables thinking and offers a tool and gets thinking +
// tool_use; the second sends that assistant content back unchanged with a tool_result.
import { client, main, model } from './sdk_common.mjs';

const tools = [{
  name: 'get_weather', description: 'The current weather in a city.',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];
const thinking = { type: 'enabled', budget_tokens: 1024 };

await main(async () => {
  const api = client();
  const question = { role: 'user', content: 'What is the weather in Paris? Use the tool.' };
  const first = await api.messages.create({ model, max_tokens: 2048, thinking, tools, messages: [question] });
  const toolUse = first.content.find((b) => b.type === 'tool_use');
  if (!toolUse) return { first_content: first.content, first_stop_reason: first.stop_reason, second: null };
  const second = await api.messages.create({
    model, max_tokens: 2048, thinking, tools,
    messages: [question, { role: 'assistant', content: first.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: toolUse.id, content: 'Sunny, 21 C' }] }],
  });
  return {
    first_content: first.content, first_stop_reason: first.stop_reason,
    second_content: second.content, second_stop_reason: second.stop_reason, second_usage: second.usage,
  };
});
