// Shared by the OpenAI-side scripts: the gateway from the environment, one JSON object printed at the end.
// Scripts are copied into .cache/clients/scripts by tests/clients/run.py, so imports resolve there.
import OpenAI from 'openai';

export const model = process.env.MODEL ?? 'gpt-5.5';

// X-LLMGW-Session names the session in the gateway's ledger; the SDKs send it on every request.
export function sessionHeaders() {
  return process.env.LLMGW_SESSION ? { 'X-LLMGW-Session': process.env.LLMGW_SESSION } : {};
}

export function openaiClient(apiKey = process.env.OPENAI_API_KEY) {
  const baseURL = process.env.OPENAI_BASE_URL;
  if (!baseURL || !apiKey) throw new Error('set OPENAI_BASE_URL and OPENAI_API_KEY');
  // No retries: a test must see the first answer the gateway gives.
  return new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000, defaultHeaders: sessionHeaders() });
}

// What an API error looked like to the client: its class, status and the error body's code/type.
export function describeError(err) {
  if (err instanceof OpenAI.APIError) {
    return { status: err.status ?? null, class: err.constructor.name, code: err.code ?? null,
             type: err.type ?? null, message: err.message };
  }
  return { status: err?.statusCode ?? err?.status ?? null, class: err?.constructor?.name ?? typeof err,
           message: String(err?.message ?? err) };
}

// Run `body`, print its result as one JSON line; a failure is printed too, as what the SDK saw.
export async function main(body) {
  try {
    console.log(JSON.stringify({ ok: true, ...(await body()) }));
  } catch (err) {
    console.log(JSON.stringify({ ok: false, error: describeError(err) }));
  }
}
