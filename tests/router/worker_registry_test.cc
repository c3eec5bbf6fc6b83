// Liveness and membership in the router's worker registry, and its claims
// through the load-only placement policy (the pre-cache-aware placement).
#include "router/worker_registry.h"

#include "router/placement_policy.h"

#include "gtest/gtest.h"

namespace tandem::router {
namespace {

v1::WorkerInfo Info(const std::string& address, v1::WorkerRole role, int64_t blocks = 100, int32_t block_size = 16) {
  v1::WorkerInfo i;
  i.set_address(address);
  i.set_role(role);
  i.set_model_name("m");
  i.set_model_fingerprint("fp");
  i.set_engine_numerics("cpu, bf16 activations");
  i.mutable_kv_layout()->set_num_layers(4);
  i.mutable_kv_layout()->set_num_kv_heads(2);
  i.mutable_kv_layout()->set_head_dim(16);
  i.mutable_kv_layout()->set_block_size(block_size);
  i.mutable_kv_layout()->set_dtype("float32");
  i.set_kv_blocks_total(blocks);
  return i;
}

PlacementOptions LoadOnly() {
  PlacementOptions o;
  o.mode = PlacementMode::kLoad;
  return o;
}

WorkerRegistryOptions Options() {
  WorkerRegistryOptions o;
  o.model_name = "m";
  o.liveness_timeout = absl::Seconds(5);
  return o;
}

TEST(WorkerRegistryTest, DecodePlacementPrefersFreeBlocksAndCountsWhatItPlaced) {
  WorkerRegistry r(Options());
  PlacementPolicy p(LoadOnly(), r, nullptr);
  const std::string a = *r.Register(Info("h:1", v1::WORKER_ROLE_DECODE, 100));
  const std::string b = *r.Register(Info("h:2", v1::WORKER_ROLE_DECODE, 60));
  auto first = p.PickDecode({}, 50);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->id, a);
  // a now has 50 free as far as the router knows; b has 60.
  EXPECT_EQ(p.PickDecode({}, 10)->id, b);
  r.Done(a, 50);
  r.Done(b, 10);
  auto none = p.PickDecode({}, 1000);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(none.status().message().find("1000"), std::string::npos);
  // Load reports replace the registration's numbers.
  v1::LoadReport rep;
  rep.set_worker_id(a);
  rep.set_kv_blocks_free(5);
  EXPECT_TRUE(r.Report(rep));
  EXPECT_EQ(p.PickDecode({}, 20)->id, b);
}

TEST(WorkerRegistryTest, DecodePlacementSkipsWorkersThatRefusedTheRequest) {
  WorkerRegistry r(Options());
  PlacementPolicy p(LoadOnly(), r, nullptr);
  const std::string a = *r.Register(Info("h:1", v1::WORKER_ROLE_DECODE, 100));
  const std::string b = *r.Register(Info("h:2", v1::WORKER_ROLE_DECODE, 60));
  auto next = p.PickDecode({}, 10, {a});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->id, b);
  r.Done(b, 10);
  auto none = p.PickDecode({}, 10, {a, b});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(none.status().message().find("no other decode worker"), std::string::npos) << none.status();
  // Excluding only b leaves a, the best anyway.
  EXPECT_EQ(p.PickDecode({}, 10, {b})->id, a);
}

TEST(WorkerRegistryTest, RegisteringAnAddressAgainReplacesTheOldEntry) {
  WorkerRegistry r(Options());
  PlacementPolicy p(LoadOnly(), r, nullptr);
  const std::string old_id = *r.Register(Info("h:1", v1::WORKER_ROLE_DECODE, 100));
  const std::string new_id = *r.Register(Info("h:1", v1::WORKER_ROLE_DECODE, 40));
  EXPECT_NE(old_id, new_id);
  EXPECT_EQ(r.CountLive(v1::WORKER_ROLE_DECODE), 1);
  EXPECT_FALSE(r.Find(old_id).has_value());
  v1::LoadReport rep;
  rep.set_worker_id(old_id);
  EXPECT_FALSE(r.Report(rep));
  EXPECT_EQ(p.PickDecode({}, 50).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(WorkerRegistryTest, PrefillPlacementPrefersTheShortestQueue) {
  WorkerRegistry r(Options());
  PlacementPolicy p(LoadOnly(), r, nullptr);
  const std::string a = *r.Register(Info("h:1", v1::WORKER_ROLE_PREFILL));
  const std::string b = *r.Register(Info("h:2", v1::WORKER_ROLE_PREFILL));
  v1::LoadReport rep;
  rep.set_worker_id(a);
  rep.set_queued_prompt_tokens(5000);
  r.Report(rep);
  EXPECT_EQ(p.PickPrefill({}, 100)->id, b);
  EXPECT_EQ(p.PickPrefill({}, 100)->id, b);
  EXPECT_EQ(r.CountLive(v1::WORKER_ROLE_PREFILL), 2);
}

TEST(WorkerRegistryTest, SilentAndRemovedWorkersLeavePlacement) {
  WorkerRegistry r(Options());
  PlacementPolicy p(LoadOnly(), r, nullptr);
  const std::string a = *r.Register(Info("h:1", v1::WORKER_ROLE_DECODE));
  EXPECT_TRUE(r.ExpireStale(absl::Now() + absl::Seconds(1)).empty());
  EXPECT_EQ(r.ExpireStale(absl::Now() + absl::Seconds(6)), std::vector<std::string>{a});
  EXPECT_EQ(p.PickDecode({}, 1).status().code(), absl::StatusCode::kUnavailable);
  v1::LoadReport rep;
  rep.set_worker_id(a);
  EXPECT_FALSE(r.Report(rep)) << "an expired worker must register again";
  const std::string b = *r.Register(Info("h:2", v1::WORKER_ROLE_DECODE));
  r.Remove(b, "test");
  EXPECT_EQ(p.PickDecode({}, 1).status().code(), absl::StatusCode::kUnavailable);
  // Draining workers take no new requests.
  const std::string c = *r.Register(Info("h:3", v1::WORKER_ROLE_DECODE));
  rep.set_worker_id(c);
  rep.set_kv_blocks_free(100);
  rep.set_draining(true);
  r.Report(rep);
  EXPECT_EQ(p.PickDecode({}, 1).status().code(), absl::StatusCode::kUnavailable);
}

TEST(WorkerRegistryTest, MismatchedWorkersAreRefusedWithTheField) {
  WorkerRegistry r(Options());
  PlacementPolicy p(LoadOnly(), r, nullptr);
  ASSERT_TRUE(r.Register(Info("h:1", v1::WORKER_ROLE_DECODE, 100, 16)).ok());
  auto layout = r.Register(Info("h:2", v1::WORKER_ROLE_PREFILL, 100, 32));
  EXPECT_EQ(layout.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(layout.status().message().find("block_size is 32 here but 16 there"), std::string::npos)
      << layout.status();
  v1::WorkerInfo other = Info("h:3", v1::WORKER_ROLE_PREFILL);
  other.set_model_fingerprint("fp2");
  EXPECT_NE(r.Register(other).status().message().find("fingerprint"), std::string::npos);
  other = Info("h:5", v1::WORKER_ROLE_PREFILL);
  other.set_engine_numerics("cpu, fp32 activations");
  auto numerics = r.Register(other);
  EXPECT_EQ(numerics.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(numerics.status().message().find("\"cpu, fp32 activations\" here but \"cpu, bf16 activations\" there"),
            std::string::npos)
      << numerics.status();
  other = Info("h:4", v1::WORKER_ROLE_PREFILL);
  other.set_model_name("other");
  EXPECT_NE(r.Register(other).status().message().find("other"), std::string::npos);
  EXPECT_EQ(r.Register(Info("nocolon", v1::WORKER_ROLE_DECODE)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WorkerRegistryTest, EveryWayOutIsReported) {
  std::vector<std::string> removed;
  WorkerRegistryOptions o = Options();
  o.on_removed = [&](const std::string& id) { removed.push_back(id); };
  WorkerRegistry r(o);
  const std::string a = *r.Register(Info("h:1", v1::WORKER_ROLE_DECODE));
  const std::string a2 = *r.Register(Info("h:1", v1::WORKER_ROLE_DECODE));  // replaces a
  const std::string b = *r.Register(Info("h:2", v1::WORKER_ROLE_DECODE));
  r.Remove(b, "test");
  r.ExpireStale(absl::Now() + absl::Seconds(6));
  EXPECT_EQ(removed, (std::vector<std::string>{a, b, a2}));
}

}  // namespace
}  // namespace tandem::router
