// The Vercel AI SDK over the Responses API: the default `openai(model)` provider (OPENAI_BASE_URL,
// OPENAI_API_KEY from the environment) for generateText, createOpenAI({baseURL, apiKey}) for
// streamText; both offer one tool and run up to three steps, so the tool's result goes back.
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { createOpenAI, openai } from '@ai-sdk/openai';
import { z } from 'zod';
import { describeError, main, model, sessionHeaders } from './openai_common.mjs';

const calls = [];
const weather = tool({
  description: 'The forecast for a city',
  inputSchema: z.object({ city: z.string().describe('the city') }),
  execute: async ({ city }) => {
    calls.push(city);
    return { city, forecast: `sunny-over-${city}` };
  },
});

const summary = (steps) => steps.map((s) => ({ finish: s.finishReason,
  tool_calls: s.toolCalls.map((c) => c.toolName), tool_results: s.toolResults.map((r) => r.output) }));

await main(async () => {
  const headers = sessionHeaders();
  const generated = await generateText({ model: openai(model), prompt: 'What is the weather in Paris?',
    tools: { weather }, stopWhen: stepCountIs(3), maxRetries: 0, headers });
  const generate = { text: generated.text, steps: summary(generated.steps),
                     usage: generated.totalUsage };

  const custom = createOpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY });
  let streamError = null;
  const streamed = streamText({ model: custom(model), prompt: 'What is the weather in Oslo?',
    tools: { weather }, stopWhen: stepCountIs(3), maxRetries: 0, headers,
    onError: ({ error }) => { streamError = describeError(error); } });
  let text = '';
  for await (const delta of streamed.textStream) text += delta;
  if (streamError) throw Object.assign(new Error(streamError.message), streamError);
  const stream = { text, steps: summary(await streamed.steps), usage: await streamed.totalUsage };
  return { generate, stream, executed: calls };
});
