// The tokenizer on small hand-written tokenizer.json files whose ids are
// known, the BPE trainer, and streaming detokenization.
#include "common/tokenizer/tokenizer.h"

#include <chrono>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "common/tokenizer/bpe_trainer.h"
#include "common/tokenizer/byte_level.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

// Byte-level BPE: bytes a(0) b(1) c(2) space-as-Ġ(3), merges a b -> ab(4),
// ab c -> abc(5), Ġ a -> Ġa(6); added tokens <s>(7, special) and [X](8).
constexpr char kByteLevel[] = R"({
  "added_tokens": [
    {"id": 7, "content": "<s>", "special": true},
    {"id": 8, "content": "[X]", "special": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [7], "tokens": ["<s>"]}}},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "abc": 5, "Ġa": 6},
            "merges": ["a b", "ab c", "Ġ a"]}})";

// SentencePiece BPE with byte fallback (Llama 2 style).
constexpr char kSentencePiece[] = R"({
  "added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
    {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true,
            "vocab": {"<unk>": 0, "<s>": 1, "<0xE2>": 2, "<0x82>": 3, "<0xAC>": 4, "▁": 5, "h": 6, "i": 7,
                      "▁h": 8, "▁hi": 9},
            "merges": ["▁ h", "▁h i"]}})";

std::unique_ptr<Tokenizer> Load(const char* json) {
  auto t = Tokenizer::FromJson(json, "", "test tokenizer.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

TEST(TokenizerTest, ByteLevelBpeMergesAddedTokensAndBos) {
  auto t = Load(kByteLevel);
  EXPECT_EQ(t->Encode("abc", false), (std::vector<int32_t>{5}));
  EXPECT_EQ(t->Encode("ab a", false), (std::vector<int32_t>{4, 6}));
  EXPECT_EQ(t->Encode("abc", true), (std::vector<int32_t>{7, 5}));
  EXPECT_EQ(t->Encode("a[X]<s>b", false), (std::vector<int32_t>{0, 8, 7, 1}));
  EXPECT_EQ(t->Decode(std::vector<int32_t>{7, 4, 6, 8}, false), "<s>ab a[X]");
  EXPECT_EQ(t->Decode(std::vector<int32_t>{7, 4, 6, 8}, true), "ab a[X]");  // [X] is not special
  EXPECT_EQ(t->vocab_size(), 9);
  EXPECT_EQ(t->bos_id(), 7);
  EXPECT_TRUE(t->IsSpecial(7));
  EXPECT_FALSE(t->IsSpecial(8));
  EXPECT_EQ(t->TokenToId("Ġa"), 6);
  EXPECT_EQ(t->IdToToken(6), "Ġa");
  EXPECT_EQ(t->IdToToken(100), "");
}

TEST(TokenizerTest, SentencePieceBpeWithByteFallback) {
  auto t = Load(kSentencePiece);
  EXPECT_EQ(t->Encode("hi", true), (std::vector<int32_t>{1, 9}));
  // "€" is not in the vocabulary: its three bytes are byte tokens.
  EXPECT_EQ(t->Encode("hi €", false), (std::vector<int32_t>{9, 5, 2, 3, 4}));
  EXPECT_EQ(t->Decode(std::vector<int32_t>{9, 5, 2, 3, 4}, false), "hi €");
  // Characters with neither a token nor byte tokens fuse into one <unk>.
  EXPECT_EQ(t->Encode("xyz", false), (std::vector<int32_t>{5, 0}));
}

TEST(TokenizerTest, BadTokenizerJsonNamesTheField) {
  auto check = [](const std::string& json, const std::string& needle) {
    auto t = Tokenizer::FromJson(json, "", "/m/tokenizer.json");
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find(needle), std::string::npos) << t.status();
    EXPECT_NE(t.status().message().find("/m/tokenizer.json"), std::string::npos) << t.status();
  };
  check("{", "not a valid JSON");
  check(R"({"model": {"type": "Unigram", "vocab": []}})", "Unigram");
  check(R"({"model": {"type": "BPE", "merges": []}})", "model.vocab");
  check(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a q"]}})", "model.merges[0]");
  check(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}}})", "does not compile");
}

TEST(TokenizerTest, ConfigSetsBosEosAndOverridesThePostProcessor) {
  // bos_token as an object, eos_token as a string.
  auto t = Tokenizer::FromJson(kByteLevel, R"({"bos_token": {"content": "<s>"}, "eos_token": "[X]"})", "t");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->bos_id(), 7);
  EXPECT_EQ((*t)->eos_ids(), (std::vector<int32_t>{8}));
  EXPECT_EQ((*t)->Encode("abc", true), (std::vector<int32_t>{7, 5}));

  t = Tokenizer::FromJson(kByteLevel, R"({"bos_token": "<s>", "eos_token": "[X]", "add_bos_token": false,
                                          "add_eos_token": true})", "t");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("abc", true), (std::vector<int32_t>{5, 8}));
  EXPECT_EQ((*t)->Encode("abc", false), (std::vector<int32_t>{5}));

  auto check = [](const std::string& config, const std::string& needle) {
    auto bad = Tokenizer::FromJson(kByteLevel, config, "/m/tokenizer.json");
    ASSERT_FALSE(bad.ok()) << config;
    EXPECT_NE(bad.status().message().find(needle), std::string::npos) << bad.status();
    EXPECT_NE(bad.status().message().find("/m/tokenizer_config.json: "), std::string::npos) << bad.status();
  };
  check("{", "not valid JSON");
  check(R"({"bos_token": "<nope>"})", "bos_token '<nope>' is not in the vocabulary");
  check(R"({"eos_token": 3})", "eos_token is neither a string nor an object");
  check(R"({"bos_token": "<s>", "add_bos_token": "yes"})", "add_bos_token is not a boolean");
  check(R"({"add_eos_token": true})", "add_eos_token is true but eos_token is not set");
}

TEST(TokenizerTest, FromDirReadsTokenizerAndConfig) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("tandem_tok_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << kByteLevel;
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "[X]"})";
  auto t = Tokenizer::FromDir(dir.string());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->eos_ids(), (std::vector<int32_t>{8}));
  EXPECT_EQ((*t)->Encode("abc", true), (std::vector<int32_t>{7, 5}));
  std::filesystem::remove_all(dir);
  auto missing = Tokenizer::FromDir(dir.string());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find((dir / "tokenizer.json").string()), std::string::npos)
      << missing.status();
}

TEST(TokenizerTest, AddedTokensStripSpacesAndPreferTheLongest) {
  // <a> strips spaces on its left, <a>b> on neither side; [X] strips right.
  constexpr char kJson[] = R"({
    "added_tokens": [{"id": 7, "content": "<a>", "special": true, "lstrip": true},
                     {"id": 8, "content": "<a>b>", "special": true},
                     {"id": 9, "content": "[X]", "special": false, "rstrip": true}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "abc": 5, "Ġa": 6},
              "merges": ["a b", "ab c", "Ġ a"]}})";
  auto t = Load(kJson);
  EXPECT_EQ(t->Encode("a  <a>b", false), (std::vector<int32_t>{0, 7, 1}));
  EXPECT_EQ(t->Encode("a <a>b>c", false), (std::vector<int32_t>{0, 3, 8, 2}));
  EXPECT_EQ(t->Encode("[X]  a", false), (std::vector<int32_t>{9, 0}));
  EXPECT_EQ(t->Decode(std::vector<int32_t>{0, 7, 9, 1}, true), "a[X]b");
}

TEST(TokenizerTest, ByteLevelKeepsInvalidUtf8AndIsLinearInTheText) {
  auto t = Tokenizer::FromJson(TrainByteLevelBpeTokenizerJson("some text to learn from, some text", 300, {"<s>"}),
                               "", "trained");
  ASSERT_TRUE(t.ok()) << t.status();
  const std::string bad = std::string("ok \xFF\xC3 x\xE2\x82 \xC3\xA9 end");
  EXPECT_EQ((*t)->Decode((*t)->Encode(bad, false), false), bad);
  // The same with GPT-2's regex inside the ByteLevel pre-tokenizer.
  nlohmann::json gpt2 = nlohmann::json::parse(TrainByteLevelBpeTokenizerJson("some text", 260, {}));
  gpt2["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  auto g = Tokenizer::FromJson(gpt2.dump(), "", "gpt2-style");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->Decode((*g)->Encode(bad, false), false), bad);

  // One long stretch with no added tokens: quadratic splitting would take
  // tens of seconds here, linear takes milliseconds.
  std::string big;
  while (big.size() < (1 << 20)) big += "some text, 日本語 and 123456 numbers\n\t  ";
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = (*t)->Encode(big, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ((*t)->Decode(ids, false), big);
  EXPECT_LT(seconds, 5.0);
}

TEST(TokenizerTest, TrainerIsDeterministicAndRoundTrips) {
  const std::string corpus = "the cat sat on the mat. the dog sat on the log. 日本語 and émoji 😀!\n";
  const std::string a = TrainByteLevelBpeTokenizerJson(corpus, 270, {"<|begin_of_text|>", "<|end_of_text|>"});
  EXPECT_EQ(a, TrainByteLevelBpeTokenizerJson(corpus, 270, {"<|begin_of_text|>", "<|end_of_text|>"}));
  auto t = Tokenizer::FromJson(a, "", "trained");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->vocab_size(), 270);
  EXPECT_EQ((*t)->TokenToId("<|begin_of_text|>"), 268);
  EXPECT_EQ((*t)->bos_id(), 268);
  const std::vector<int32_t> ids = (*t)->Encode("the cat sat", true);
  EXPECT_EQ(ids.front(), 268);
  EXPECT_LT(ids.size(), 1 + std::string("the cat sat").size());  // merges learned: fewer tokens than bytes
  for (const std::string& text : {corpus, std::string("unseen wörds ½ \t tabs"), std::string("x<|end_of_text|>y")}) {
    EXPECT_EQ((*t)->Decode((*t)->Encode(text, false), false), text);
  }
}

TEST(IncrementalDetokenizerTest, DeltasConcatenateToTheTextAndHoldPartialCharacters) {
  const std::string corpus = "plain ascii words only here";
  auto t = Tokenizer::FromJson(TrainByteLevelBpeTokenizerJson(corpus, 280, {"<s>"}), "", "trained");
  ASSERT_TRUE(t.ok());
  const std::string text = " naïve 😀 日本 ok";
  const std::vector<int32_t> prompt = (*t)->Encode("Say:", false);
  const std::vector<int32_t> ids = (*t)->Encode(text, false);  // multi-byte chars split into byte tokens
  IncrementalDetokenizer d(**t, prompt, false);
  std::string streamed;
  int empty = 0;
  for (int32_t id : ids) {
    const std::string delta = d.Push(id);
    EXPECT_EQ(SanitizeUtf8(delta), delta) << "a delta must be whole UTF-8";
    empty += delta.empty();
    streamed += delta;
  }
  streamed += d.Flush();
  EXPECT_EQ(streamed, text);
  EXPECT_GT(empty, 0) << "bytes of a split character were held back";
}

TEST(IncrementalDetokenizerTest, SentencePieceKeepsTheSpaceAfterThePrompt) {
  auto t = Load(kSentencePiece);
  const std::vector<int32_t> prompt = t->Encode("hi", true);
  IncrementalDetokenizer d(*t, prompt, true);
  std::string out;
  for (int32_t id : std::vector<int32_t>{9, 9}) out += d.Push(id);
  EXPECT_EQ(out, " hi hi");
}

TEST(Utf8Test, SanitizeReplacesOnlyInvalidBytes) {
  EXPECT_EQ(SanitizeUtf8("ok é 😀"), "ok é 😀");
  EXPECT_EQ(SanitizeUtf8(std::string("a\xE2\x82") + "b"), "a\xEF\xBF\xBD\xEF\xBF\xBD" "b");
  EXPECT_EQ(IncompleteUtf8Suffix("ab\xE2\x82"), 2u);
  EXPECT_EQ(IncompleteUtf8Suffix("ab\xE2\x82\xAC"), 0u);
}

}  // namespace
}  // namespace tandem
