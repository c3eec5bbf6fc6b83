#include "common/engine/cuda/gemm_algo_table.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace tandem {
namespace {

GemmAlgo Algo(int32_t id, int32_t splitk = 1) {
  GemmAlgo a;
  a.id = id;
  a.tile = 20;
  a.stages = 8;
  a.splitk = splitk;
  a.reduction = splitk > 1 ? 2 : 0;
  a.swizzle = 1;
  a.custom = 3;
  a.inner_shape = 5;
  a.cluster_shape = 2;
  return a;
}

const GemmShape kQkv{6144, 4096, true};
const GemmShape kDown{4096, 14336, false};

TEST(GemmAlgoTableTest, FindsTheSmallestTunedRowCountAtOrAboveAndTheLargestBeyond) {
  GemmAlgoTable t;
  t.Set(16, kQkv, Algo(1));
  t.Set(64, kQkv, Algo(2));
  t.Set(256, kQkv, Algo(3));
  EXPECT_EQ(t.Find(5, kQkv)->id, 1);
  EXPECT_EQ(t.Find(16, kQkv)->id, 1);
  EXPECT_EQ(t.Find(17, kQkv)->id, 2);
  EXPECT_EQ(t.Find(64, kQkv)->id, 2);
  EXPECT_EQ(t.Find(200, kQkv)->id, 3);
  EXPECT_EQ(t.Find(100000, kQkv)->id, 3);
  EXPECT_EQ(t.size(), 3u);
}

TEST(GemmAlgoTableTest, ShapesAreKeyedByNKAndOutputType) {
  GemmAlgoTable t;
  t.Set(64, kQkv, Algo(7));
  EXPECT_FALSE(t.Find(64, kDown).has_value());
  EXPECT_FALSE(t.Find(64, GemmShape{6144, 4096, false}).has_value());  // same n, k; bf16 out
  EXPECT_FALSE(t.Find(64, GemmShape{6144, 2048, true}).has_value());
  EXPECT_TRUE(t.Find(64, kQkv).has_value());
}

TEST(GemmAlgoTableTest, JsonRoundTripKeepsEveryAttribute) {
  GemmAlgoTable t;
  t.device = "NVIDIA H200";
  t.cublaslt_version = 130100;
  t.Set(256, kQkv, Algo(66, 4), 31.5, 35.0);
  t.Set(8192, kDown, Algo(71));
  absl::StatusOr<GemmAlgoTable> back = GemmAlgoTable::Parse(t.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->device, "NVIDIA H200");
  EXPECT_EQ(back->cublaslt_version, 130100);
  EXPECT_EQ(back->size(), 2u);
  EXPECT_EQ(*back->Find(256, kQkv), Algo(66, 4));
  EXPECT_EQ(*back->Find(8192, kDown), Algo(71));
  EXPECT_EQ(back->ToJson(), t.ToJson());
}

TEST(GemmAlgoTableTest, LoadsAFileAndNamesItInErrors) {
  GemmAlgoTable t;
  t.Set(32, kDown, Algo(9));
  const std::string path = ::testing::TempDir() + "/gemm_algos.json";
  std::ofstream(path) << t.ToJson();
  absl::StatusOr<GemmAlgoTable> loaded = GemmAlgoTable::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->Find(1, kDown)->id, 9);

  std::ofstream(path) << "{\"entries\": [{\"rows\": 0, \"n\": 1, \"k\": 1, \"out\": \"f32\", \"algo\": {}}]}";
  absl::Status bad = GemmAlgoTable::Load(path).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find(path), std::string::npos) << bad;
  EXPECT_NE(bad.message().find("\"rows\" 0"), std::string::npos) << bad;
  std::remove(path.c_str());

  EXPECT_EQ(GemmAlgoTable::Load(path).status().code(), absl::StatusCode::kNotFound);
}

TEST(GemmAlgoTableTest, RejectsMalformedTables) {
  const std::string algo =
      R"("algo": {"id": 1, "tile": 2, "stages": 3, "splitk": 1, "reduction": 0, "swizzle": 0, "custom": 0,
         "inner_shape": 0, "cluster_shape": 0})";
  const std::string entry = R"({"rows": 8, "n": 16, "k": 32, "out": "bf16", )" + algo + "}";
  ASSERT_TRUE(GemmAlgoTable::Parse("{\"entries\": [" + entry + "]}").ok());
  for (const std::string& bad : {
           std::string("[]"),
           std::string("not json"),
           std::string("{}"),
           std::string("{\"entries\": {}}"),
           "{\"entries\": [" + entry + ", " + entry + "]}",  // the same (rows, shape) twice
           std::string(R"({"entries": [{"rows": 8, "n": 16, "k": 32, "out": "fp8", )") + algo + "}]}",
           std::string(R"({"entries": [{"rows": 8, "n": 16, "k": 32, "out": "bf16"}]})"),
           std::string(R"({"entries": [{"rows": 8, "n": 16, "k": 32, "out": "bf16", "algo": {"id": 1}}]})"),
           std::string(R"({"entries": [{"rows": 8, "n": -16, "k": 32, "out": "bf16", )") + algo + "}]}",
           std::string(R"({"entries": [{"rows": 8, "n": 16, "k": 32.5, "out": "bf16", )") + algo + "}]}",
       }) {
    absl::StatusOr<GemmAlgoTable> t = GemmAlgoTable::Parse(bad);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace tandem
