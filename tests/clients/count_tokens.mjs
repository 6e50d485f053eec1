// messages.countTokens: the count the gateway answers for a small conversation.
import { client, main, model } from './sdk_common.mjs';

await main(async () => {
  const count = await client().messages.countTokens({
    model, messages: [{ role: 'user', content: 'Count the tokens of this sentence, please.' }] });
  return { input_tokens: count.input_tokens };
});
