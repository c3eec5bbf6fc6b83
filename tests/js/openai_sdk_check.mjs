// The router's OpenAI-compatible HTTP API driven by the official `openai`
// npm client (issue 21's evidence): chat and completions, streamed and
// not, n=2, stop strings, logprobs, a bad request, and a stream the client
// aborts mid-way.
//
// usage: node openai_sdk_check.mjs <base_url> <model> <out.json>
//   base_url: the router's http(s)://host:port/v1
//   env OPENAI_API_KEY: the api token (any string when the router has none)
//   env NODE_EXTRA_CA_CERTS: the cluster CA in TLS mode
//
// Everything the SDK alone can judge is checked here (streamed answers add
// up to the non-streamed ones, n, finish reasons, the error's shape); a
// mismatch exits 1 with a message on stderr. What needs the gRPC API or
// the workers (the seeded tokens, no KV block in use after the abort) is
// written to out.json for the C++ test (tests/integration/openai_sdk_test.cc)
// to compare. The aborted stream is the last request, so that the test's
// KV check follows it.
import { writeFileSync } from 'node:fs';
import OpenAI from 'openai';

const [baseURL, model, outPath] = process.argv.slice(2);
if (!baseURL || !model || !outPath) {
  console.error('usage: node openai_sdk_check.mjs <base_url> <model> <out.json>');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey: process.env.OPENAI_API_KEY || 'none', maxRetries: 0, timeout: 60000 });

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}
function equal(got, want, what) {
  check(JSON.stringify(got) === JSON.stringify(want), `${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

// tandem's own sampling extras (ignore_eos, skip_special_tokens) ride in
// the body: the SDK sends the params object as it is.
const SEEDED = { temperature: 0.8, seed: 7, ignore_eos: true, skip_special_tokens: false };
const out = {};

async function completions() {
  const prompt = 'Once upon a time';
  const whole = await client.completions.create({ model, prompt, max_tokens: 12, logprobs: 1, ...SEEDED });
  equal(whole.object, 'text_completion', 'completion object');
  equal(whole.model, model, 'completion model');
  equal(whole.choices.length, 1, 'completion choices');
  const c = whole.choices[0];
  equal(c.finish_reason, 'length', 'completion finish_reason');
  equal(whole.usage.completion_tokens, 12, 'completion usage.completion_tokens');
  equal(c.logprobs.tokens.length, 12, 'completion logprobs.tokens');
  check(c.logprobs.token_logprobs.every((l) => l <= 0), 'completion token_logprobs <= 0');
  out.completion = { prompt, text: c.text, tokens: c.logprobs.tokens };

  const stream = await client.completions.create({
    model, prompt, max_tokens: 12, ...SEEDED, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      text += ch.text;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  equal(text, c.text, 'streamed completion text');
  equal(finish, 'length', 'streamed completion finish_reason');
  equal(usage, whole.usage, 'streamed completion usage');
}

async function severalChoicesAndStop() {
  const two = await client.completions.create({ model, prompt: 'Hello', max_tokens: 6, n: 2, temperature: 1.0, seed: 3 });
  equal(two.choices.map((c) => c.index), [0, 1], 'n=2 choice indexes');
  const again = await client.completions.create({ model, prompt: 'Hello', max_tokens: 6, n: 2, temperature: 1.0, seed: 3 });
  equal(again.choices.map((c) => c.text), two.choices.map((c) => c.text), 'n=2 seeded twice');

  const greedy = await client.completions.create({ model, prompt: 'Hello', max_tokens: 12, temperature: 0, ignore_eos: true });
  const full = greedy.choices[0].text;
  check(full.length >= 4, `greedy answer too short for a stop string: ${JSON.stringify(full)}`);
  const stop = full.substr(Math.floor(full.length / 2), 2);
  const stopped = await client.completions.create({
    model, prompt: 'Hello', max_tokens: 12, temperature: 0, ignore_eos: true, stop: [stop],
  });
  equal(stopped.choices[0].finish_reason, 'stop', 'stop string finish_reason');
  equal(stopped.choices[0].text, full.substring(0, full.indexOf(stop)), 'text before the stop string');
}

async function chat() {
  const messages = [{ role: 'user', content: 'Hi there' }];
  const whole = await client.chat.completions.create({ model, messages, max_completion_tokens: 10, logprobs: true, ...SEEDED });
  equal(whole.object, 'chat.completion', 'chat object');
  const m = whole.choices[0].message;
  equal(m.role, 'assistant', 'chat role');
  equal(whole.choices[0].finish_reason, 'length', 'chat finish_reason');
  equal(whole.usage.completion_tokens, 10, 'chat usage.completion_tokens');
  const lp = whole.choices[0].logprobs.content;
  equal(lp.length, 10, 'chat logprobs.content');
  check(lp.every((t) => t.logprob <= 0), 'chat logprobs <= 0');
  out.chat = { user: messages[0].content, text: m.content, tokens: lp.map((t) => t.token) };

  const stream = await client.chat.completions.create({ model, messages, max_completion_tokens: 10, ...SEEDED, stream: true });
  let content = '';
  let first = true;
  for await (const chunk of stream) {
    for (const ch of chunk.choices) {
      equal(ch.delta.role !== undefined, first, 'role only in the first delta');
      first = false;
      if (ch.delta.content) content += ch.delta.content;
    }
  }
  equal(content, m.content, 'streamed chat content');
}

async function badRequest() {
  try {
    await client.completions.create({ model, prompt: 'x', max_tokens: 0 });
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError, `max_tokens=0: want BadRequestError, got ${e}`);
    equal(e.status, 400, 'bad request status');
    // The SDK exposes the body's "error" object as e.error.
    check(typeof e.error?.message === 'string', `bad request error.message: ${JSON.stringify(e.error)}`);
    check(typeof e.error?.type === 'string', 'bad request error.type');
    equal(e.param, 'max_tokens', 'bad request error.param');
    out.bad_request = { status: e.status, type: e.error.type, param: e.param };
    return;
  }
  throw new Error('check failed: max_tokens=0 was accepted');
}

// A stream far longer than the test waits, aborted after its first chunk:
// the router must cancel the call and free its blocks (the C++ test checks).
async function abortMidStream() {
  const controller = new AbortController();
  const stream = await client.completions.create(
    { model, prompt: 'Once upon a time', max_tokens: 100000, ignore_eos: true, stream: true },
    { signal: controller.signal });
  let chunks = 0;
  try {
    for await (const chunk of stream) {
      chunks += chunk.choices.length;
      if (chunks === 1) controller.abort();
    }
  } catch (e) {
    check(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', `abort: unexpected ${e}`);
  }
  check(chunks >= 1, 'abort: no chunk before the abort');
  check(controller.signal.aborted, 'abort: the stream ended on its own');
  out.aborted_after_chunks = chunks;
}

try {
  const models = await client.models.list();
  equal(models.data.map((m) => m.id), [model], '/v1/models ids');
  out.generation_defaults = models.data[0].generation_defaults ?? null;
  await completions();
  await severalChoicesAndStop();
  await chat();
  await badRequest();
  await abortMidStream();
} catch (e) {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
}
writeFileSync(outPath, JSON.stringify(out));
