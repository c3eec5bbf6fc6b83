// The shared worker options: defaults and the validation of each flag,
// the transport name in particular.
#include "common/worker/worker_options.h"

#include "gtest/gtest.h"

namespace tandem {
namespace {

WorkerOptions Valid() {
  WorkerOptions o;
  o.router = "127.0.0.1:8000";
  return o;
}

TEST(WorkerOptionsTest, DefaultsAreValidWithARouterAndTransportIsAuto) {
  EXPECT_EQ(WorkerOptions().transport, "auto");
  EXPECT_TRUE(ValidateWorkerOptions(Valid()).ok());
  EXPECT_FALSE(ValidateWorkerOptions(WorkerOptions()).ok());  // no router
}

TEST(WorkerOptionsTest, EveryTransportNameIsAcceptedAndOthersRefused) {
  for (const char* name : {"auto", "cuda_ipc", "nccl", "ucx", "ucx_staged", "inproc"}) {
    WorkerOptions o = Valid();
    o.transport = name;
    EXPECT_TRUE(ValidateWorkerOptions(o).ok()) << name;
  }
  WorkerOptions o = Valid();
  o.transport = "gloo";
  absl::Status s = ValidateWorkerOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--transport 'gloo'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("cuda_ipc"), std::string::npos) << s;
}

TEST(WorkerOptionsTest, DeviceAndPoolFlagsAreChecked) {
  WorkerOptions o = Valid();
  o.device = "tpu";
  EXPECT_FALSE(ValidateWorkerOptions(o).ok());
  o = Valid();
  o.backend.num_kv_blocks = 0;  // only with --device=cuda
  EXPECT_FALSE(ValidateWorkerOptions(o).ok());
  o.device = "cuda";
  EXPECT_TRUE(ValidateWorkerOptions(o).ok());
  o.backend.gpu_memory_fraction = 0;
  EXPECT_FALSE(ValidateWorkerOptions(o).ok());
}

}  // namespace
}  // namespace tandem
