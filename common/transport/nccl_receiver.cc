#include "common/transport/nccl_receiver.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/transport/nccl_protocol.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {

struct NcclReceiver::Job {
  v1::NcclTransferRequest req;
  NcclRecvPlan plan;
  KvReceiver::ReceiveFailed on_failed;
  absl::Time deadline;
  void* staging = nullptr;
  GpuEventHandle done = nullptr;
  bool pinned = false;  // holds a PinForWrite of the transfer's reservation
};

// Everything but `thread` under the receiver's mu_.
struct NcclReceiver::Pair {
  std::string prefill_id;
  uint64_t comm_id = 0;        // of `comm`, set by the thread once joined
  uint64_t accepted_comm_id = 0;  // of the last request with a unique id Accept queued
  NcclCommHandle comm = nullptr;
  GpuStreamHandle stream = nullptr;
  bool stop = false;
  std::deque<Job> queued;     // not posted yet
  std::deque<Job> in_flight;  // posted, event not done
  std::condition_variable cv;
  std::thread thread;
};

NcclReceiver::NcclReceiver(std::shared_ptr<NcclOps> ops, KvPoolView& pool, int device, NcclTransportOptions options,
                           KvWriteGate* gate)
    : ops_(std::move(ops)), pool_(pool), device_(device), options_(std::move(options)), gate_(gate) {
  stride_ = static_cast<uint64_t>(pool_.layout().block_bytes());  // KvPoolView's invariant
}

NcclReceiver::~NcclReceiver() {
  std::map<std::string, std::unique_ptr<Pair>> pairs;
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (auto& [id, p] : pairs_) {
      p->stop = true;
      p->cv.notify_all();
    }
    pairs.swap(pairs_);
  }
  for (auto& [id, p] : pairs) {
    if (p->thread.joinable()) p->thread.join();
  }
}

size_t NcclReceiver::live_pairs() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [id, p] : pairs_) n += p->comm != nullptr ? 1 : 0;
  return n;
}

absl::Status NcclReceiver::Accept(const v1::NcclTransferRequest& req, const std::vector<int32_t>& reserved,
                                  KvReceiver::ReceiveFailed on_failed) {
  TANDEM_ASSIGN_OR_RETURN(NcclRecvPlan plan,
                          ValidateNcclRequest(req, pool_.layout().num_layers, pool_.num_blocks(), stride_, reserved));
  std::unique_lock<std::mutex> lock(mu_);
  std::unique_ptr<Pair>& p = pairs_[req.prefill_worker_id()];
  if (p == nullptr) {
    if (req.unique_id().empty()) {
      pairs_.erase(req.prefill_worker_id());
      return absl::FailedPreconditionError(absl::StrCat("no NCCL communicator with prefill worker ",
                                                        req.prefill_worker_id(), " (and the request brings no id)"));
    }
    p = std::make_unique<Pair>();
    p->prefill_id = req.prefill_worker_id();
    Pair* raw = p.get();
    p->thread = std::thread([this, raw] { Run(raw); });
  } else if (req.unique_id().empty() && req.comm_id() != p->accepted_comm_id) {
    return absl::FailedPreconditionError(absl::StrCat("NCCL communicator ", req.comm_id(), " with prefill worker ",
                                                      req.prefill_worker_id(), " is unknown here (restarted?)"));
  }
  if (!req.unique_id().empty()) p->accepted_comm_id = req.comm_id();
  Job job;
  if (gate_ != nullptr) {
    // The whole reservation: every block the plan writes is in it (checked above).
    TANDEM_RETURN_IF_ERROR(gate_->PinForWrite(req.transfer_id(), reserved));
    job.pinned = true;
  }
  job.req = req;
  job.plan = std::move(plan);
  job.on_failed = std::move(on_failed);
  job.deadline = absl::Now() + std::min(absl::Seconds(req.timeout_seconds()), options_.max_receive_timeout);
  // Forget outcomes nobody asked for (Decode never came) after a while.
  std::erase_if(results_, [](const auto& kv) {
    return kv.second.pending == 0 && absl::Now() - kv.second.at > absl::Minutes(10);
  });
  Result& r = results_[req.transfer_id()];
  if (r.status.has_value() && r.status->ok()) r.status.reset();
  ++r.pending;
  r.at = absl::Now();
  p->queued.push_back(std::move(job));
  p->cv.notify_all();
  return absl::OkStatus();
}

absl::Status NcclReceiver::WaitReceived(std::string_view transfer_id, absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = results_.find(std::string(transfer_id));
  if (it == results_.end()) return absl::OkStatus();
  auto done = [](const Result& r) { return r.status.has_value() && (r.pending == 0 || !r.status->ok()); };
  while (!done(it->second)) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("KV of transfer ", std::string(transfer_id), " has not arrived over NCCL"));
    }
    results_cv_.wait_for(lock, std::chrono::milliseconds(5));
    it = results_.find(std::string(transfer_id));
    if (it == results_.end()) return absl::OkStatus();
  }
  absl::Status s = *it->second.status;
  results_.erase(it);
  return s;
}

// Caller holds mu_.
void NcclReceiver::FailAll(Pair* p, std::unique_lock<std::mutex>& lock, const absl::Status& s) {
  TANDEM_LOG(WARNING) << "NCCL communicator with prefill worker " << p->prefill_id << " aborted: " << s;
  if (p->comm != nullptr) ops_->CommAbort(p->comm);
  p->comm = nullptr;
  p->comm_id = 0;
  std::vector<Job> failed;
  for (Job& j : p->in_flight) failed.push_back(std::move(j));
  p->in_flight.clear();
  // Queued jobs on the same communicator can never be matched now; one
  // bringing a new unique id starts over.
  std::deque<Job> keep;
  for (Job& j : p->queued) {
    if (!j.req.unique_id().empty()) {
      keep.push_back(std::move(j));
    } else {
      failed.push_back(std::move(j));
    }
  }
  p->queued.swap(keep);
  // Requests on the aborted communicator are refused from now on; one
  // still queued with a new unique id names the next.
  p->accepted_comm_id = p->queued.empty() ? 0 : p->queued.back().req.comm_id();
  // Reservations are freed before the failure is published, so that a
  // WaitReceived that sees it finds the blocks already back (outside the
  // lock: on_failed takes the reservations' own).
  lock.unlock();
  for (Job& j : failed) {
    if (j.staging != nullptr) ops_->Free(device_, j.staging);
    if (j.done != nullptr) ops_->DestroyEvent(j.done);
    if (j.on_failed) j.on_failed(j.req.transfer_id());
    // Aborted: nothing writes the blocks any more; a release (on_failed's)
    // takes effect now.
    if (j.pinned) gate_->Unpin(j.req.transfer_id());
  }
  lock.lock();
  for (Job& j : failed) {
    Result& r = results_[j.req.transfer_id()];
    r.pending = std::max(0, r.pending - 1);
    r.status = absl::Status(s.code(), absl::StrCat("NCCL transfer ", j.req.transfer_id(), ": ", s.message()));
    r.at = absl::Now();
  }
  results_cv_.notify_all();
}

absl::Status NcclReceiver::Post(Pair* p, Job& job) {
  const uint64_t stride = stride_;
  const int layers = pool_.layout().num_layers;
  TANDEM_ASSIGN_OR_RETURN(job.done, ops_->CreateEvent(device_));
  if (job.plan.staged) {
    TANDEM_ASSIGN_OR_RETURN(job.staging, ops_->Alloc(device_, static_cast<size_t>(2 * job.plan.blocks) * stride));
  }
  for (int layer = 0; layer < layers; ++layer) {
    if (job.plan.staged) {
      TANDEM_RETURN_IF_ERROR(
          ops_->Recv(job.staging, static_cast<size_t>(2 * job.plan.blocks) * stride, 0, p->comm, p->stream));
      const char* in = static_cast<const char*>(job.staging);
      for (int kv = 0; kv < 2; ++kv) {
        for (const NcclRecvRun& r : job.plan.runs) {
          void* to = kv == 0 ? pool_.KeyBlock(layer, r.dst) : pool_.ValueBlock(layer, r.dst);
          const size_t bytes = static_cast<size_t>(r.count) * stride;
          TANDEM_RETURN_IF_ERROR(ops_->CopyAsync(to, in, bytes, p->stream));
          in += bytes;
        }
      }
      continue;
    }
    TANDEM_RETURN_IF_ERROR(ops_->GroupStart());
    absl::Status s;
    for (const NcclRecvRun& r : job.plan.runs) {
      const size_t bytes = static_cast<size_t>(r.count) * stride;
      if (s.ok()) s = ops_->Recv(pool_.KeyBlock(layer, r.dst), bytes, 0, p->comm, p->stream);
      if (s.ok()) s = ops_->Recv(pool_.ValueBlock(layer, r.dst), bytes, 0, p->comm, p->stream);
    }
    absl::Status end = ops_->GroupEnd();
    TANDEM_RETURN_IF_ERROR(s);
    TANDEM_RETURN_IF_ERROR(end);
  }
  return ops_->RecordEvent(job.done, p->stream);
}

void NcclReceiver::Run(Pair* p) {
  // A new thread starts on GPU 0; the pool's GPU may be another.
  const absl::Status bound = ops_->BindThread(device_);
  std::unique_lock<std::mutex> lock(mu_);
  if (!bound.ok()) {
    TANDEM_LOG(ERROR) << "NCCL receiver thread: " << bound;
    p->in_flight.swap(p->queued);
    for (Job& j : p->in_flight) j.req.clear_unique_id();
    FailAll(p, lock, absl::UnavailableError(bound.message()));
  }
  while (!p->stop) {
    if (p->queued.empty() && p->in_flight.empty()) {
      p->cv.wait(lock, [&] { return p->stop || !p->queued.empty(); });
      continue;
    }
    // Post what is queued (in order): NCCL matches the pair's ops in the
    // order both sides issue them.
    while (!p->queued.empty()) {
      Job job = std::move(p->queued.front());
      p->queued.pop_front();
      if (!job.req.unique_id().empty() && job.req.comm_id() != p->comm_id) {
        if (p->comm != nullptr) {
          FailAll(p, lock, absl::UnavailableError("the prefill worker made a new communicator"));
        }
        lock.unlock();
        absl::Status made;
        if (p->stream == nullptr) {
          absl::StatusOr<GpuStreamHandle> st = ops_->CreateStream(device_);
          made = st.status();
          if (st.ok()) p->stream = *st;
        }
        NcclCommHandle comm = nullptr;
        if (made.ok()) {
          absl::StatusOr<NcclCommHandle> c = ops_->CommInitRank(job.req.unique_id(), 2, 1, device_);
          made = c.status();
          if (c.ok()) comm = *c;
        }
        const absl::Time until = std::min(job.deadline, absl::Now() + options_.init_timeout);
        while (made.ok() && comm != nullptr) {
          absl::Status err;
          const NcclCommState st = ops_->CommState(comm, &err);
          if (st == NcclCommState::kReady) break;
          if (st == NcclCommState::kFailed) made = absl::UnavailableError(err.message());
          else if (absl::Now() > until) made = absl::DeadlineExceededError("NCCL communicator creation timed out");
          else std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        lock.lock();
        p->comm = comm;
        p->comm_id = job.req.comm_id();
        if (!made.ok()) {
          p->in_flight.push_back(std::move(job));
          FailAll(p, lock, made);
          continue;
        }
        TANDEM_LOG(INFO) << "NCCL communicator with prefill worker " << p->prefill_id << " ready";
      }
      if (p->comm == nullptr || job.req.comm_id() != p->comm_id) {
        p->in_flight.push_back(std::move(job));
        FailAll(p, lock, absl::UnavailableError("the pair's NCCL communicator is gone"));
        continue;
      }
      absl::Status posted = Post(p, job);
      p->in_flight.push_back(std::move(job));
      if (!posted.ok()) FailAll(p, lock, absl::UnavailableError(posted.message()));
    }
    // Watch what is in flight: completion in order, errors, deadlines.
    while (!p->in_flight.empty()) {
      Job& head = p->in_flight.front();
      absl::StatusOr<bool> done = ops_->EventDone(head.done);
      absl::Status err;
      if (done.ok() && !*done && p->comm != nullptr && ops_->CommState(p->comm, &err) == NcclCommState::kFailed) {
        done = absl::UnavailableError(err.message());
      }
      if (!done.ok()) {
        FailAll(p, lock, absl::UnavailableError(done.status().message()));
        break;
      }
      if (!*done) {
        if (absl::Now() > head.deadline) {
          FailAll(p, lock, absl::DeadlineExceededError("the KV did not arrive in time"));
        }
        break;
      }
      Job j = std::move(head);
      p->in_flight.pop_front();
      // Before the outcome is published: a Decode waiting for it claims
      // the reservation next, which waits for pins.
      if (j.pinned) gate_->Unpin(j.req.transfer_id());
      Result& r = results_[j.req.transfer_id()];
      if (--r.pending <= 0) {
        r.pending = 0;
        if (!r.status.has_value()) r.status = absl::OkStatus();
      }
      r.at = absl::Now();
      results_cv_.notify_all();
      if (j.staging != nullptr) ops_->Free(device_, j.staging);
      ops_->DestroyEvent(j.done);
    }
    if (!p->in_flight.empty()) p->cv.wait_for(lock, std::chrono::microseconds(200));
  }
  // Shutting down: nothing in flight may outlive the pool.
  // An idle communicator is destroyed (below), a busy one aborted.
  if (!p->in_flight.empty() || !p->queued.empty()) {
    for (Job& j : p->queued) j.req.clear_unique_id();
    FailAll(p, lock, absl::UnavailableError("the decode worker is stopping"));
  }
  if (p->comm != nullptr) ops_->CommDestroy(p->comm);
  if (p->stream != nullptr) ops_->DestroyStream(device_, p->stream);
}

}  // namespace tandem
