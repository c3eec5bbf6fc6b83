// Placement modes: cache_aware trades the blocks a worker lacks against
// the blocks it has in use, stale workers compete on load only, round
// robin cycles, and every mode respects room and exclusions.
#include "router/placement_policy.h"

#include <numeric>

#include "gtest/gtest.h"
#include "tests/router/fake_workers.h"

namespace tandem::router {
namespace {

v1::WorkerInfo Info(const std::string& address, v1::WorkerRole role, int64_t blocks = 100) {
  v1::WorkerInfo i = testing::FakeWorkerInfo(address, role, blocks);
  i.set_max_batch_size(64);
  return i;
}

PlacementOptions Mode(PlacementMode mode) {
  PlacementOptions o;
  o.mode = mode;
  return o;
}

class PlacementPolicyTest : public ::testing::Test {
 protected:
  PlacementPolicyTest() : registry_(Options()), index_(absl::Seconds(10), absl::Seconds(10)) {}
  static WorkerRegistryOptions Options() {
    WorkerRegistryOptions o;
    o.model_name = "m";
    return o;
  }
  std::string Add(const std::string& address, v1::WorkerRole role, int64_t free_blocks) {
    const std::string id = *registry_.Register(Info(address, role));
    v1::LoadReport r;
    r.set_worker_id(id);
    r.set_kv_blocks_free(free_blocks);
    r.set_kv_blocks_used(100 - free_blocks);
    EXPECT_TRUE(registry_.Report(r));
    return id;
  }
  void Holds(const std::string& id, std::span<const BlockHash> keys) {
    v1::KvBlockEvents e;
    e.set_sequence(1);
    e.set_full_set(true);
    for (const BlockHash& k : keys) BlockKeyToProto(k, e.add_stored());
    ASSERT_FALSE(index_.Apply(id, e, absl::Now()));
  }
  WorkerRegistry registry_;
  PrefixIndex index_;
  // 10 full blocks.
  const std::vector<int32_t> prompt_ = [] {
    std::vector<int32_t> t(165);
    std::iota(t.begin(), t.end(), 7);
    return t;
  }();
  const std::vector<BlockHash> keys_ = HashFullBlocks(prompt_, 16, "");
};

TEST_F(PlacementPolicyTest, CacheAwarePrefersTheCachedPrefixUntilTheWorkerIsFull) {
  const std::string a = Add("h:1", v1::WORKER_ROLE_DECODE, 90);
  const std::string b = Add("h:2", v1::WORKER_ROLE_DECODE, 95);
  Holds(a, keys_);
  Holds(b, {});
  PlacementPolicy cache(Mode(PlacementMode::kCacheAware), registry_, &index_);
  PlacementPolicy load(Mode(PlacementMode::kLoad), registry_, &index_);
  // a lacks 1 of 11 blocks at 21% use (cost 1 + 11 x 0.21); b lacks 11 at
  // 16% (11 + 11 x 0.16).
  absl::StatusOr<WorkerView> w = cache.PickDecode(keys_, 11);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->id, a);
  EXPECT_EQ(w->cached_prefix_blocks, 10);
  registry_.Done(a, 11);
  w = load.PickDecode(keys_, 11);
  EXPECT_EQ(w->id, b);
  EXPECT_EQ(w->cached_prefix_blocks, 0) << "load mode predicts no hit";
  registry_.Done(b, 11);
  EXPECT_EQ(index_.NumPredictedOf(b), 0u) << "only cache_aware predicts";
  // a nearly full (91% with the request): the prefix still pays at the
  // default weights (1 + 10.0 against 11 + 1.8), not at a load weight of 2.
  v1::LoadReport r;
  r.set_worker_id(a);
  r.set_kv_blocks_free(20);
  registry_.Report(r);
  EXPECT_EQ(cache.PickDecode(keys_, 11)->id, a);
  registry_.Done(a, 11);
  PlacementOptions heavy = Mode(PlacementMode::kCacheAware);
  heavy.load_weight = 2;
  PlacementPolicy load_heavy(heavy, registry_, &index_);
  w = load_heavy.PickDecode(keys_, 11);
  EXPECT_EQ(w->id, b);
  registry_.Done(b, 11);
  EXPECT_EQ(load_heavy.BestCachedPrefix(keys_, v1::WORKER_ROLE_DECODE), 10);
  EXPECT_EQ(load.BestCachedPrefix(keys_, v1::WORKER_ROLE_DECODE), 0);
  // b will hold the prompt's blocks: the next request with this prefix
  // finds them there before b's events say so.
  EXPECT_EQ(index_.NumPredictedOf(b), keys_.size());
  w = cache.PickDecode(keys_, 11);
  EXPECT_EQ(w->id, b);
  EXPECT_EQ(w->cached_prefix_blocks, 10);
}

TEST_F(PlacementPolicyTest, AStaleWorkerCompetesOnLoadOnly) {
  PrefixIndex quick(absl::Milliseconds(1), absl::Seconds(10));
  const std::string a = Add("h:1", v1::WORKER_ROLE_AGGREGATED, 90);
  const std::string b = Add("h:2", v1::WORKER_ROLE_AGGREGATED, 95);
  v1::KvBlockEvents e;
  e.set_sequence(1);
  e.set_full_set(true);
  for (const BlockHash& k : keys_) BlockKeyToProto(k, e.add_stored());
  ASSERT_FALSE(quick.Apply(a, e, absl::Now() - absl::Seconds(1)));
  PlacementPolicy cache(Mode(PlacementMode::kCacheAware), registry_, &quick);
  absl::StatusOr<WorkerView> w = cache.PickDecode(keys_, 11, {}, v1::WORKER_ROLE_AGGREGATED);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->id, b);
  EXPECT_EQ(w->cached_prefix_blocks, 0);
}

TEST_F(PlacementPolicyTest, RoomAndExclusionsHoldInEveryMode) {
  const std::string a = Add("h:1", v1::WORKER_ROLE_DECODE, 10);
  const std::string b = Add("h:2", v1::WORKER_ROLE_DECODE, 50);
  Holds(a, keys_);
  for (PlacementMode mode : {PlacementMode::kCacheAware, PlacementMode::kLoad, PlacementMode::kRoundRobin}) {
    PlacementPolicy p(Mode(mode), registry_, &index_);
    // a caches the prompt but has no room for it.
    for (int i = 0; i < 3; ++i) {
      absl::StatusOr<WorkerView> w = p.PickDecode(keys_, 11);
      ASSERT_TRUE(w.ok()) << w.status();
      EXPECT_EQ(w->id, b);
      registry_.Done(b, 11);
    }
    absl::StatusOr<WorkerView> none = p.PickDecode(keys_, 11, {b});
    EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(none.status().message().find("no other decode worker has room"), std::string::npos);
    EXPECT_EQ(p.PickPrefill(keys_, 165).status().code(), absl::StatusCode::kUnavailable);
  }
}

TEST_F(PlacementPolicyTest, RoundRobinCyclesAndCacheAwarePrefillUsesTheIndex) {
  const std::string p1 = Add("h:1", v1::WORKER_ROLE_PREFILL, 100);
  const std::string p2 = Add("h:2", v1::WORKER_ROLE_PREFILL, 100);
  const std::string p3 = Add("h:3", v1::WORKER_ROLE_PREFILL, 100);
  PlacementPolicy rr(Mode(PlacementMode::kRoundRobin), registry_, &index_);
  std::vector<std::string> seen;
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<WorkerView> w = rr.PickPrefill(keys_, 165);
    seen.push_back(w->id);
    registry_.Done(w->id, 165);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{p1, p2, p3, p1, p2, p3}));
  Holds(p2, std::span(keys_).first(6));
  PlacementPolicy cache(Mode(PlacementMode::kCacheAware), registry_, &index_);
  absl::StatusOr<WorkerView> w = cache.PickPrefill(keys_, 165);
  EXPECT_EQ(w->id, p2);
  EXPECT_EQ(w->cached_prefix_blocks, 6);
  // Queued work counts against it: 165 tokens now placed there, and more
  // queued than its cached prefix saves.
  v1::LoadReport r;
  r.set_worker_id(p2);
  r.set_queued_prompt_tokens(1000);
  registry_.Report(r);
  EXPECT_NE(cache.PickPrefill(keys_, 165)->id, p2);
}

}  // namespace
}  // namespace tandem::router
