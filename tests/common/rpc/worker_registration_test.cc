// Block events from a worker's registration to a real in-process router
// registry and prefix index: the full set after registering, numbered
// deltas after, the full set again when the router asks for it (it lost
// track) and after the router forgot the worker (as after its restart).
#include "common/rpc/worker_registration.h"

#include <mutex>
#include <numeric>

#include "common/rpc/grpc_server.h"
#include "gtest/gtest.h"
#include "router/prefix_index.h"
#include "router/registry_service.h"
#include "router/router_instance.h"
#include "router/worker_registry.h"

namespace tandem {
namespace {

using router::PrefixIndex;
using router::RegistryService;
using router::WorkerRegistry;
using router::WorkerRegistryOptions;

// What a worker's KV cache would publish, controlled by the test.
class FakeCacheEvents {
 public:
  void Store(std::span<const BlockHash> keys) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockHash& k : keys) {
      stored_.push_back(k);
      cached_.push_back(k);
    }
  }
  void Remove(const BlockHash& key) {
    std::lock_guard<std::mutex> lock(mu_);
    removed_.push_back(key);
    std::erase(cached_, key);
  }
  BlockEventSource Source() {
    BlockEventSource s;
    s.drain = [this](std::vector<BlockHash>* stored, std::vector<BlockHash>* removed) {
      std::lock_guard<std::mutex> lock(mu_);
      stored->insert(stored->end(), stored_.begin(), stored_.end());
      removed->insert(removed->end(), removed_.begin(), removed_.end());
      stored_.clear();
      removed_.clear();
    };
    s.cached = [this] {
      std::lock_guard<std::mutex> lock(mu_);
      ++full_sets_;
      return cached_;
    };
    return s;
  }
  int full_sets() {
    std::lock_guard<std::mutex> lock(mu_);
    return full_sets_;
  }

 private:
  std::mutex mu_;
  std::vector<BlockHash> stored_, removed_, cached_;
  int full_sets_ = 0;
};

class WorkerRegistrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WorkerRegistryOptions o;
    o.model_name = "m";
    o.report_interval = absl::Milliseconds(20);
    o.on_removed = [this](const std::string& id) { index_.RemoveWorker(id); };
    registry_ = std::make_unique<WorkerRegistry>(o);
    service_ = std::make_unique<RegistryService>(*registry_, &index_);
    auto server = GrpcServer::Start("127.0.0.1:0", {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::ZeroDuration());
  }
  static v1::WorkerInfo Info() {
    v1::WorkerInfo i;
    i.set_address("127.0.0.1:1");
    i.set_role(v1::WORKER_ROLE_AGGREGATED);
    i.set_model_name("m");
    i.set_model_fingerprint("fp");
    i.mutable_kv_layout()->set_block_size(16);
    i.set_kv_blocks_total(100);
    i.set_publishes_block_events(true);
    return i;
  }
  // Polls until the index matches `want` leading blocks of `keys` on `id`.
  bool WaitForMatch(const std::string& id, std::span<const BlockHash> keys, int32_t want) {
    for (int i = 0; i < 250; ++i) {
      const std::vector<std::string> ids = {id};
      if (index_.MatchPrefix(keys, ids, absl::Now())[0] == want) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  std::string WaitForId(WorkerRegistration& r, const std::string& not_this = "") {
    for (int i = 0; i < 250; ++i) {
      const std::string id = r.worker_id();
      if (!id.empty() && id != not_this && registry_->Find(id).has_value()) return id;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return "";
  }

  PrefixIndex index_{absl::Seconds(5), absl::Seconds(5)};
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<RegistryService> service_;
  std::unique_ptr<GrpcServer> server_;
};

TEST_F(WorkerRegistrationTest, TheIndexFollowsTheWorkersCacheAndIsRebuiltWhenLost) {
  std::vector<int32_t> tokens(160);
  std::iota(tokens.begin(), tokens.end(), 1);
  const std::vector<BlockHash> keys = HashFullBlocks(tokens, 16, "");
  FakeCacheEvents cache;
  cache.Store(std::span(keys).first(4));  // cached before it registered
  WorkerRegistration reg(server_->address(), Info(), [] { return v1::LoadReport(); });
  reg.SetBlockEventSource(cache.Source());
  reg.Start();
  const std::string id = WaitForId(reg);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitForMatch(id, keys, 4)) << "the first report carries the full set";
  cache.Store(std::span(keys).subspan(4));
  ASSERT_TRUE(WaitForMatch(id, keys, 10)) << "deltas";
  cache.Remove(keys[6]);
  ASSERT_TRUE(WaitForMatch(id, keys, 6));
  const int full_sets = cache.full_sets();

  // The router loses track (as after a gap): it asks, the worker resends.
  index_.RemoveWorker(id);
  ASSERT_TRUE(WaitForMatch(id, keys, 6)) << "resynced from the full set";
  EXPECT_GT(cache.full_sets(), full_sets);

  // The router forgets the worker (as a restarted router does): it
  // registers again and its new id is indexed from its full set.
  registry_->Remove(id, "test");
  EXPECT_EQ(index_.NumKeysOf(id), 0u);
  const std::string again = WaitForId(reg, id);
  ASSERT_FALSE(again.empty());
  EXPECT_TRUE(WaitForMatch(again, keys, 6));
  reg.Stop();
}

// The router-lost callback (decode workers free that router's
// reservations on it): not called when a live router merely forgot the
// worker (same instance, it registers again), called once with the
// instance's id when the router's port stops answering.
TEST_F(WorkerRegistrationTest, ARouterIsLostOnlyWhenItsPortRefusesNotWhenItForgetsTheWorker) {
  std::mutex mu;
  std::vector<std::string> lost;
  WorkerRegistration reg(server_->address(), Info(), [] { return v1::LoadReport(); });
  reg.SetRouterLostCallback([&](const std::string& instance) {
    std::lock_guard<std::mutex> lock(mu);
    lost.push_back(instance);
  });
  reg.Start();
  const std::string id = WaitForId(reg);
  ASSERT_FALSE(id.empty());
  registry_->Remove(id, "test");
  ASSERT_FALSE(WaitForId(reg, id).empty()) << "registered again with the same instance";
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(lost.empty()) << lost[0];
  }

  server_->Shutdown(absl::ZeroDuration());
  server_.reset();
  for (int i = 0; i < 250; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!lost.empty()) break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  absl::SleepFor(absl::Milliseconds(100));  // more failed reports: still one loss
  reg.Stop();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0], router::RouterInstanceId());
}

}  // namespace
}  // namespace tandem
