// Safetensors files: write/read round trips, sharded checkpoints, and bad
// files that fail with the file's name and the problem.
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/model/safetensors_reader.h"
#include "common/model/safetensors_writer.h"
#include "common/model/weight_store.h"
#include "gtest/gtest.h"
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
    EXPECT_EQ(got.source, path);
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
      {"truncated.safetensors", FileWithHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4)
                                    .substr(0, 20),
       "truncated header"},
      {"badjson.safetensors", FileWithHeader("{not json", 0), "not a valid JSON"},
      {"offsets.safetensors", FileWithHeader(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8),
       "outside the data section"},
      {"size.safetensors", FileWithHeader(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8),
       "shape and dtype need 12"},
      {"dtype.safetensors", FileWithHeader(R"({"a": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]}})", 1),
       "dtype I8"},
      {"fields.safetensors", FileWithHeader(R"({"a": {"dtype": "F32"}})", 0), "lacks dtype, shape or data_offsets"},
  };
  for (const Case& c : cases) {
    const std::string path = WriteRaw(dir, c.name, c.bytes);
    auto f = ReadSafetensors(path);
    ASSERT_FALSE(f.ok()) << c.name;
    EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status();
    EXPECT_NE(f.status().message().find(c.needle), std::string::npos) << c.name << ": " << f.status();
  }
  EXPECT_EQ(OpenSafetensorsDir((dir.path() / "missing").string()).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tandem
