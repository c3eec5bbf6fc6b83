#include "common/default_model/test_model.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/model/safetensors_writer.h"
#include "common/model/weight_store.h"
#include "common/tokenizer/bpe_trainer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

// Text the default tokenizer's merges are learned from: everyday English,
// some code and numbers, so that common words become single tokens.
constexpr std::string_view kTokenizerCorpus = R"(
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Once upon a time there was a small town by the sea, and the people of the town worked in the harbour.
In the morning the sun rose over the hills and the fishermen went out to the water with their boats.
It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.
Language models predict the next token from the tokens before it. Serving them well means batching
requests together, keeping the key and value cache in memory, and moving it between machines quickly.
Prefill computes the prompt; decode generates one token at a time for every running request.
The router places each request on a prefill worker and a decode worker and streams the tokens back.
Hello, world! How are you today? I am fine, thank you. What time is it? It is ten past nine.
We measured the time to first token, the time per output token and the throughput in tokens per second.
def generate(prompt, max_new_tokens=16):
    tokens = tokenize(prompt)
    for step in range(max_new_tokens):
        logits = model(tokens)
        tokens.append(int(logits.argmax()))
    return detokenize(tokens)
for (int i = 0; i < n; ++i) { sum += values[i] * weights[i]; }
if (status.ok()) { return result; } else { return status; }
1 2 3 4 5 6 7 8 9 10 100 1000 2024 2025 2026 3.14159 0.5 42
the of and to in is was for on that with as by at from this be are it not or have an which
)";

constexpr uint64_t kWeightSeed = 0x7a6e64656d21ULL;  // "tandem!"
constexpr int kTokenizerVocab = 768;

absl::Status WriteFile(const fs::path& path, std::string_view text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

}  // namespace

ModelConfig TestModelConfig(int64_t vocab_size) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = vocab_size;
  c.hidden_size = 128;
  c.intermediate_size = 384;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;  // GQA, as in Llama 3
  c.head_dim = 16;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.rope_scaling.type = RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 1024;
  c.tie_word_embeddings = false;
  c.torch_dtype = DType::kBF16;
  c.bos_token_id = 0;
  c.eos_token_ids = {1};
  return c;
}

std::string TestModelTokenizerJson() {
  return TrainByteLevelBpeTokenizerJson(kTokenizerCorpus, kTokenizerVocab,
                                        {"<|begin_of_text|>", "<|end_of_text|>"});
}

absl::Status WriteTestModel(const std::string& dir, int num_hidden_layers) {
  if (num_hidden_layers < 1) return absl::InvalidArgumentError("the test model needs at least one layer");
  const fs::path out(dir);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));

  const std::string tokenizer_json = TestModelTokenizerJson();
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                          Tokenizer::FromJson(tokenizer_json, "", "default tokenizer.json"));
  ModelConfig config = TestModelConfig(tokenizer->vocab_size());
  config.num_hidden_layers = num_hidden_layers;
  config.bos_token_id = *tokenizer->TokenToId("<|begin_of_text|>");
  config.eos_token_ids = {*tokenizer->TokenToId("<|end_of_text|>")};

  // Weights as bf16, the way released Llama checkpoints are stored. A larger
  // scale than real initialisations makes the random model's next-token
  // distributions peaked, so greedy and sampled outputs differ visibly.
  std::unique_ptr<WeightStore> weights =
      MakeDummyWeightStore(config, kWeightSeed, DType::kBF16, /*scale=*/0.25f);
  std::vector<HostTensor> tensors;
  for (const TensorSpec& spec : ExpectedTensors(config)) {
    TANDEM_ASSIGN_OR_RETURN(HostTensor t, weights->Get(spec.name));
    tensors.push_back(std::move(t));
  }
  TANDEM_RETURN_IF_ERROR(WriteSafetensors((out / "model.safetensors").string(), tensors,
                                          {{"format", "pt"}}));
  TANDEM_RETURN_IF_ERROR(WriteFile(out / "config.json", ModelConfigToJson(config)));
  TANDEM_RETURN_IF_ERROR(WriteFile(out / "tokenizer.json", tokenizer_json));
  TANDEM_RETURN_IF_ERROR(WriteFile(out / "tokenizer_config.json", R"({
  "add_bos_token": true,
  "add_eos_token": false,
  "bos_token": "<|begin_of_text|>",
  "eos_token": "<|end_of_text|>",
  "model_max_length": 4096,
  "tokenizer_class": "PreTrainedTokenizerFast"
}
)"));
  return absl::OkStatus();
}

}  // namespace tandem
