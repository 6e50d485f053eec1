// Shared by the SDK scripts: a client from the environment, and one JSON object printed at the end.
// Scripts are copied into .cache/clients/scripts by tests/clients/run.py, so this import resolves there.
import Anthropic from '@anthropic-ai/sdk';

export const model = process.env.MODEL ?? 'claude-sonnet-4-5';

export function client() {
  const baseURL = process.env.ANTHROPIC_BASE_URL;
  const apiKey = process.env.ANTHROPIC_API_KEY;
  if (!baseURL || !apiKey) throw new Error('set ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY');
  // No retries: a test must see the first answer the gateway gives.
  return new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
}

// Run `body`, print its result as one JSON line; an API error is printed too, as what the SDK saw.
export async function main(body) {
  try {
    console.log(JSON.stringify({ ok: true, ...(await body()) }));
  } catch (err) {
    const error = err instanceof Anthropic.APIError
      ? { status: err.status, type: err.error?.error?.type ?? null, message: err.message,
          class: err.constructor.name }
      : { class: err?.constructor?.name ?? typeof err, message: String(err?.message ?? err) };
    console.log(JSON.stringify({ ok: false, error }));
  }
}
