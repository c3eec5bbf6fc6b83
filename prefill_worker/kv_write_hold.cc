#include "prefill_worker/kv_write_hold.h"

#include <algorithm>
#include <condition_variable>

#include "absl/strings/str_cat.h"
#include "common/rpc/cluster_channel.h"
#include "grpcpp/support/client_callback.h"

namespace tandem {
namespace {

// How long before the decode side's maximum a hold stops counting as held
// (Held): the puts issued before then must have landed by the time the
// decode worker's watchdog unpins.
absl::Duration SafetyMargin(absl::Duration max_hold) { return std::min(max_hold / 4, absl::Seconds(5)); }

// The decode worker's refusal as the prefill worker reports it: its own
// reasons (the reservation is gone, a block is not its own) as they are;
// a transport-level failure without gRPC's message, which names addresses.
absl::Status RefusalOf(const grpc::Status& s) {
  const auto code = static_cast<absl::StatusCode>(s.error_code());
  switch (code) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kInvalidArgument:
      return absl::Status(code, absl::StrCat("the decode worker refused the KV write hold: ", s.error_message()));
    case absl::StatusCode::kOk:
      return absl::UnavailableError("the decode worker ended the KV write hold before granting it");
    case absl::StatusCode::kUnimplemented:
      // The prefill loop then writes without a hold (a rolling upgrade).
      return absl::UnimplementedError("the decode worker takes no KV write holds (an older version)");
    case absl::StatusCode::kUnauthenticated:
      return absl::UnauthenticatedError("the decode worker did not accept this worker's cluster credentials");
    default:
      return absl::UnavailableError("the decode worker is unreachable for the KV write hold");
  }
}

}  // namespace

struct KvWriteHold::State {
  std::mutex mu;
  std::condition_variable answered_cv;
  bool answered = false;  // granted, or refused / failed before a grant
  bool granted = false;
  bool done = false;      // the call ended (OnDone)
  absl::Status refusal;   // when answered && !granted
  absl::Time sent;        // before the request went out
  absl::Time safe_until = absl::InfinitePast();  // once granted
  absl::Time renew_after = absl::InfinitePast();  // once granted: a quarter of the way to safe_until
  // Sequencing of the half-close: one write outstanding at a time, and
  // WritesDone once, after the request's write completed.
  bool write_done = false;
  bool write_ok = false;
  bool closing = false;  // the owner closed: it touches the call no more after Close
  bool writes_done_started = false;
  // The call object is deleted by the later of OnDone and Close; while
  // Close is inside StartWritesDone, OnDone leaves the deletion to it.
  bool owner_in_call = false;
};

// Lifetime: created by KvWriteHold, deleted by the later of OnDone (the
// call ended) and Close (the owner let go), see State::owner_in_call.
class KvWriteHold::Call final : public grpc::ClientBidiReactor<v1::KvWriteHoldRequest, v1::KvWriteHoldResponse> {
 public:
  Call(v1::DecodeService::StubInterface& stub, v1::KvWriteHoldRequest req, std::shared_ptr<State> state)
      : state_(std::move(state)), req_(std::move(req)) {
    stub.async()->HoldKvWrite(&ctx_, this);
    StartWrite(&req_);
    StartRead(&resp_);
    StartCall();
  }

  // The owner is done with the hold: half-close (now, or once the
  // request's write completed); deletes this if the call already ended.
  void Close() {
    bool half_close = false;
    bool done = false;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->closing = true;
      half_close = TakeHalfCloseLocked();
      state_->owner_in_call = half_close;
      done = state_->done;
    }
    if (half_close) {
      StartWritesDone();
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->owner_in_call = false;
      done = state_->done;
    }
    if (done) delete this;
  }

  void OnWriteDone(bool ok) override {
    bool half_close = false;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->write_done = true;
      state_->write_ok = ok;
      half_close = TakeHalfCloseLocked();
    }
    if (half_close) StartWritesDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the call is ending; OnDone has its status
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (!state_->answered) {
        state_->answered = true;
        state_->granted = true;
        const absl::Duration max_hold = absl::Seconds(std::max(0.0, resp_.max_hold_seconds()));
        state_->safe_until = state_->sent + max_hold - SafetyMargin(max_hold);
        // A quarter in: a transfer writing under it renews at a layer's end,
        // which leaves three quarters of the span for the next layer's end.
        state_->renew_after = state_->sent + (max_hold - SafetyMargin(max_hold)) / 4;
      }
    }
    state_->answered_cv.notify_all();
    // Nothing more comes; the read completes when the call ends.
    StartRead(&resp_);
  }

  // The last reaction (none runs after or beside it).
  void OnDone(const grpc::Status& s) override {
    bool owner_gone = false;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->done = true;
      if (!state_->answered) {
        state_->answered = true;
        state_->refusal = RefusalOf(s);
      }
      owner_gone = state_->closing && !state_->owner_in_call;
    }
    state_->answered_cv.notify_all();
    if (owner_gone) delete this;
  }

 private:
  bool TakeHalfCloseLocked() {
    if (!state_->closing || !state_->write_done || !state_->write_ok || state_->writes_done_started || state_->done) {
      return false;
    }
    state_->writes_done_started = true;
    return true;
  }

  std::shared_ptr<State> state_;
  grpc::ClientContext ctx_;
  v1::KvWriteHoldRequest req_;
  v1::KvWriteHoldResponse resp_;
};

KvWriteHold::KvWriteHold(v1::DecodeService::StubInterface& stub, const std::string& transfer_id,
                         const std::vector<int32_t>& dst_blocks)
    : state_(std::make_shared<State>()) {
  v1::KvWriteHoldRequest req;
  req.set_transfer_id(transfer_id);
  req.mutable_dst_blocks()->Add(dst_blocks.begin(), dst_blocks.end());
  state_->sent = absl::Now();
  call_ = new Call(stub, std::move(req), state_);
}

KvWriteHold::~KvWriteHold() { call_->Close(); }

absl::Status KvWriteHold::WaitGranted(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(state_->mu);
  const absl::Duration wait = std::max(deadline - absl::Now(), absl::ZeroDuration());
  if (!state_->answered_cv.wait_for(lock, absl::ToChronoNanoseconds(wait), [this] { return state_->answered; })) {
    return absl::DeadlineExceededError("the decode worker did not answer the KV write hold in time");
  }
  return state_->granted ? absl::OkStatus() : state_->refusal;
}

absl::Status KvWriteHold::Held() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (!state_->granted) {
    return state_->answered ? state_->refusal : absl::FailedPreconditionError("the KV write hold is not granted yet");
  }
  if (state_->done) return absl::UnavailableError("the decode worker ended the KV write hold");
  if (absl::Now() >= state_->safe_until) {
    return absl::DeadlineExceededError("the KV write hold reached the decode worker's maximum");
  }
  return absl::OkStatus();
}

bool KvWriteHold::renewal_due() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->granted && (state_->done || absl::Now() >= state_->renew_after);
}

std::unique_ptr<KvWriteHold> KvWriteHolder::Open(const std::string& decode_address, const std::string& transfer_id,
                                                 const std::vector<int32_t>& dst_blocks) {
  std::unique_ptr<v1::DecodeService::Stub>& stub = stubs_[decode_address];
  if (stub == nullptr) stub = v1::DecodeService::NewStub(DialCluster(decode_address));
  return std::make_unique<KvWriteHold>(*stub, transfer_id, dst_blocks);
}

}  // namespace tandem
