// Safetensors files: write/read round trips, sharded checkpoints, and bad
// files that fail with the file's name and the problem.
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/model/safetensors_reader.h"
#include "common/model/safetensors_writer.h"
#include "common/model/weight_store.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

HostTensor MakeTensor(const std::string& name, DType dtype, std::vector<int64_t> shape, float start) {
  HostTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  auto buf = std::make_shared<std::vector<std::byte>>(static_cast<size_t>(t.numel()) * DTypeSize(dtype));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = start + 0.5f * static_cast<float>(i);
    std::byte* p = buf->data() + i * DTypeSize(dtype);
    if (dtype == DType::kF32) {
      std::memcpy(p, &v, 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? FloatToBF16(v) : FloatToF16(v);
      std::memcpy(p, &h, 2);
    }
  }
  t.data = buf->data();
  t.nbytes = buf->size();
  t.keepalive = buf;
  return t;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string WriteRaw(const testing::TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = (dir.path() / name).string();
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// A file with the given JSON header and `data_bytes` zero bytes of data.
std::string FileWithHeader(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

TEST(SafetensorsTest, RoundTripsEveryDType) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "model.safetensors").string();
  std::vector<HostTensor> tensors = {MakeTensor("a", DType::kF32, {2, 3}, 1.0f),
                                     MakeTensor("b", DType::kF16, {4}, -2.0f),
                                     MakeTensor("c", DType::kBF16, {3, 1}, 0.25f)};
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());
  // The header is padded to 8 bytes, as the Python library writes it.
  std::ifstream in(path, std::ios::binary);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  EXPECT_EQ(header_len % 8, 0u);

  auto file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata.at("format"), "pt");
  for (const HostTensor& want : tensors) {
    const HostTensor& got = file->tensors.at(want.name);
    EXPECT_EQ(got.dtype, want.dtype);
    EXPECT_EQ(got.shape, want.shape);
    EXPECT_EQ(got.ToFloat(), want.ToFloat()) << want.name;
    ASSERT_EQ(got.nbytes, want.nbytes);
    EXPECT_EQ(std::memcmp(got.data, want.data, want.nbytes), 0) << want.name;
    EXPECT_EQ(got.source, path);
  }
  // Padding is spaces after the JSON, and the tensors follow in the order given.
  const std::string bytes = ReadAll(path);
  const std::string header = bytes.substr(8, header_len);
  const nlohmann::json j = nlohmann::json::parse(header);
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json::array({0, 24}));
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json::array({24, 32}));
  EXPECT_EQ(j["c"]["data_offsets"], nlohmann::json::array({32, 38}));
  EXPECT_EQ(j["c"]["dtype"], "BF16");
  EXPECT_EQ(bytes.size(), 8 + header_len + 38);
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
  // Nothing but the file is left in the directory (the temporary was renamed).
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(SafetensorsTest, EmptyTensorListAndNoMetadata) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "empty.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, {}, {}).ok());
  auto file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->tensors.empty());
  EXPECT_TRUE(file->metadata.empty());
  EXPECT_EQ(ReadAll(path).find("__metadata__"), std::string::npos);
}

TEST(SafetensorsTest, TensorsOutliveTheFileObjectAndTheFile) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "m.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, {MakeTensor("w", DType::kF16, {5}, 3.0f)}, {}).ok());
  HostTensor kept;
  {
    auto file = ReadSafetensors(path);
    ASSERT_TRUE(file.ok()) << file.status();
    kept = file->tensors.at("w");
  }
  std::filesystem::remove(path);  // the mapping stays valid after unlink
  EXPECT_EQ(kept.ToFloat(), (std::vector<float>{3, 3.5, 4, 4.5, 5}));
}

TEST(SafetensorsTest, WriterRejectsInconsistentTensors) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "w.safetensors").string();
  auto dup = WriteSafetensors(path, {MakeTensor("x", DType::kF32, {2}, 1), MakeTensor("x", DType::kF32, {2}, 1)}, {});
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dup.message().find("'x' is given twice"), std::string::npos) << dup;
  HostTensor short_data = MakeTensor("y", DType::kF32, {4}, 1);
  short_data.shape = {5};
  auto size = WriteSafetensors(path, {short_data}, {});
  EXPECT_NE(size.message().find("'y' holds 16 bytes but its shape and dtype need 20"), std::string::npos) << size;
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  // Writing into a missing directory fails with the path, not a crash.
  auto nodir = WriteSafetensors((dir.path() / "no" / "w.safetensors").string(), {}, {});
  EXPECT_FALSE(nodir.ok());
  EXPECT_NE(nodir.message().find("w.safetensors"), std::string::npos) << nodir;
}

TEST(SafetensorsTest, DirectoryWithoutIndexReadsEveryShard) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteSafetensors((dir.path() / "b.safetensors").string(), {MakeTensor("y", DType::kBF16, {2}, 1)}, {}).ok());
  ASSERT_TRUE(WriteSafetensors((dir.path() / "a.safetensors").string(), {MakeTensor("x", DType::kF32, {3}, 0)}, {}).ok());
  std::ofstream(dir.path() / "README.md") << "not a checkpoint";
  auto store = OpenSafetensorsDir(dir.str());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ((*store)->Get("x")->source, (dir.path() / "a.safetensors").string());
  EXPECT_EQ((*store)->Get("y")->ToFloat(), (std::vector<float>{1, 1.5}));
}

TEST(SafetensorsTest, DirectoryWithoutCheckpointIsNotFound) {
  testing::TempDir dir;
  std::ofstream(dir.path() / "config.json") << "{}";
  auto store = OpenSafetensorsDir(dir.str());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(store.status().message().find(dir.str()), std::string::npos) << store.status();
  EXPECT_NE(store.status().message().find("no *.safetensors"), std::string::npos) << store.status();
}

TEST(SafetensorsTest, BrokenIndexNamesTheProblem) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteSafetensors((dir.path() / "s1.safetensors").string(), {MakeTensor("x", DType::kF32, {2}, 1)}, {}).ok());
  ASSERT_TRUE(WriteSafetensors((dir.path() / "s2.safetensors").string(), {MakeTensor("y", DType::kF32, {2}, 1)}, {}).ok());
  const auto index = dir.path() / "model.safetensors.index.json";
  struct Case {
    std::string json, needle;
  } cases[] = {
      {"{broken", "model.safetensors.index.json: not a valid JSON"},
      {R"({"metadata": {}})", "weight_map is missing"},
      {R"({"weight_map": {"x": "s1.safetensors", "y": "gone.safetensors"}})", "gone.safetensors"},
      {R"({"weight_map": {"x": "s2.safetensors", "y": "s2.safetensors"}})",
       "tensor 'x' is mapped to " + (dir.path() / "s2.safetensors").string()},
      {R"({"weight_map": {"x": "s1.safetensors", "y": "s1.safetensors"}})", "tensor 'y' is mapped to"},
  };
  for (const Case& c : cases) {
    std::ofstream(index, std::ios::trunc) << c.json;
    auto store = OpenSafetensorsDir(dir.str());
    ASSERT_FALSE(store.ok()) << c.json;
    EXPECT_NE(store.status().message().find(c.needle), std::string::npos) << store.status();
  }
}

TEST(SafetensorsTest, ShardedCheckpointThroughTheIndex) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteSafetensors((dir.path() / "model-00001-of-00002.safetensors").string(),
                               {MakeTensor("x", DType::kF32, {2}, 1)}, {})
                  .ok());
  ASSERT_TRUE(WriteSafetensors((dir.path() / "model-00002-of-00002.safetensors").string(),
                               {MakeTensor("y", DType::kF32, {3}, 2)}, {})
                  .ok());
  std::ofstream(dir.path() / "model.safetensors.index.json")
      << R"({"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors",
                                             "y": "model-00002-of-00002.safetensors"}})";
  auto store = OpenSafetensorsDir(dir.str());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ((*store)->Get("y")->ToFloat(), (std::vector<float>{2, 2.5, 3}));
  EXPECT_EQ((*store)->Get("z").status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, DuplicateTensorsAcrossFilesAreAnError) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteSafetensors((dir.path() / "a.safetensors").string(), {MakeTensor("x", DType::kF32, {2}, 1)}, {}).ok());
  ASSERT_TRUE(WriteSafetensors((dir.path() / "b.safetensors").string(), {MakeTensor("x", DType::kF32, {2}, 1)}, {}).ok());
  auto store = OpenSafetensorsDir(dir.str());
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("'x'"), std::string::npos) << store.status();
}

TEST(SafetensorsTest, BadFilesNameTheFileAndTheProblem) {
  testing::TempDir dir;
  struct Case {
    std::string name, bytes, needle;
  } cases[] = {
      {"short.safetensors", "abc", "too short"},
      {"zero.safetensors", "", "file of 0 bytes is too short"},
      {"huge_len.safetensors", std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8) + "{}", "truncated header"},
      {"past_eof.safetensors", std::string("\x40\0\0\0\0\0\0\0", 8) + "{}", "claims 64 bytes"},
      {"array.safetensors", FileWithHeader("[1, 2]", 0), "not a valid JSON object"},
      {"overflow.safetensors",
       FileWithHeader(R"({"a": {"dtype": "F32", "shape": [4611686018427387904, 4611686018427387904], "data_offsets": [0, 0]}})", 0),
       "needs more bytes than the data section holds"},
      {"negshape.safetensors", FileWithHeader(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", 0),
       "tensor 'a': shape holds a negative"},
      {"reversed.safetensors", FileWithHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", 4),
       "tensor 'a': data_offsets [4, 0)"},
      {"truncated.safetensors", FileWithHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4)
                                    .substr(0, 20),
       "truncated header"},
      {"badjson.safetensors", FileWithHeader("{not json", 0), "not a valid JSON"},
      {"offsets.safetensors", FileWithHeader(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8),
       "outside the data section"},
      {"size.safetensors", FileWithHeader(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8),
       "tensor 'a': data_offsets span 8 bytes but shape and dtype need 12"},
      {"dtype.safetensors", FileWithHeader(R"({"a": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]}})", 1),
       "tensor 'a' has dtype I8"},
      {"fields.safetensors", FileWithHeader(R"({"a": {"dtype": "F32"}})", 0), "lacks dtype, shape or data_offsets"},
  };
  for (const Case& c : cases) {
    const std::string path = WriteRaw(dir, c.name, c.bytes);
    auto f = ReadSafetensors(path);
    ASSERT_FALSE(f.ok()) << c.name;
    EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status();
    EXPECT_NE(f.status().message().find(c.needle), std::string::npos) << c.name << ": " << f.status();
  }
  auto missing = OpenSafetensorsDir((dir.path() / "missing").string());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("missing"), std::string::npos) << missing.status();
  // A bad shard makes the whole directory fail with that shard's name.
  EXPECT_NE(OpenSafetensorsDir(dir.str()).status().message().find(dir.str()), std::string::npos);
}

}  // namespace
}  // namespace tandem
