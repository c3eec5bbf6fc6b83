#include "common/transport/ucx_staged_protocol.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/transport/wire_codec.h"

namespace tandem {
namespace {

constexpr uint32_t kPoolMagic = 0x31505354;    // "TSP1"
constexpr uint32_t kChunkMagic = 0x31435354;   // "TSC1"
constexpr uint32_t kFinishMagic = 0x31465354;  // "TSF1"
constexpr uint32_t kAckMagic = 0x31415354;     // "TSA1"
constexpr uint32_t kMaxRuns = 1u << 20;

absl::Status Bad(std::string_view what, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed staged-UCX ", std::string(what), ": ", std::string(why)));
}

}  // namespace

int64_t StagedChunkHeader::blocks() const {
  int64_t n = 0;
  for (const BlockRun& r : runs) n += r.count;
  return n;
}

std::string EncodeStagedPoolInfo(const StagedPoolInfo& info) {
  wire::Writer w;
  w.U32(kPoolMagic);
  w.U64(info.slot_bytes);
  w.U32(info.slots);
  return std::move(w.str());
}

absl::StatusOr<StagedPoolInfo> DecodeStagedPoolInfo(std::string_view bytes, std::string_view owner) {
  wire::Reader r(bytes);
  uint32_t magic = 0;
  StagedPoolInfo info;
  if (!r.U32(&magic) || magic != kPoolMagic || !r.U64(&info.slot_bytes) || !r.U32(&info.slots) || !r.done()) {
    return Bad(absl::StrCat("pool info of decode worker ", std::string(owner)), "truncated or not a staging record");
  }
  if (info.slot_bytes == 0 || info.slots == 0) {
    return Bad(absl::StrCat("pool info of decode worker ", std::string(owner)), "no staging slots");
  }
  return info;
}

std::string EncodeStagedChunk(const StagedChunkHeader& h) {
  wire::Writer w;
  w.U32(kChunkMagic);
  w.Bytes(h.transfer_id);
  w.I32(h.layer);
  w.I32(h.chunk);
  w.U32(static_cast<uint32_t>(h.runs.size()));
  for (const BlockRun& run : h.runs) {
    w.I32(run.dst);
    w.I32(run.count);
  }
  return std::move(w.str());
}

absl::StatusOr<StagedChunkHeader> DecodeStagedChunk(std::string_view bytes) {
  wire::Reader r(bytes);
  uint32_t magic = 0, runs = 0;
  StagedChunkHeader h;
  if (!r.U32(&magic) || magic != kChunkMagic) return Bad("chunk header", "wrong magic");
  if (!r.Bytes(&h.transfer_id, 4096) || !r.I32(&h.layer) || !r.I32(&h.chunk) || !r.U32(&runs) || runs > kMaxRuns ||
      r.remaining() != static_cast<size_t>(runs) * 8) {
    return Bad("chunk header", "truncated");
  }
  h.runs.resize(runs);
  for (BlockRun& run : h.runs) {
    r.I32(&run.dst);
    r.I32(&run.count);
  }
  return h;
}

std::string EncodeStagedFinish(const StagedFinishHeader& h) {
  wire::Writer w;
  w.U32(kFinishMagic);
  w.Bytes(h.transfer_id);
  w.U32(h.chunks);
  return std::move(w.str());
}

absl::StatusOr<StagedFinishHeader> DecodeStagedFinish(std::string_view bytes) {
  wire::Reader r(bytes);
  uint32_t magic = 0;
  StagedFinishHeader h;
  if (!r.U32(&magic) || magic != kFinishMagic || !r.Bytes(&h.transfer_id, 4096) || !r.U32(&h.chunks) || !r.done()) {
    return Bad("finish header", "truncated or wrong magic");
  }
  return h;
}

std::string EncodeStagedAck(const StagedAckHeader& h) {
  wire::Writer w;
  w.U32(kAckMagic);
  w.Bytes(h.transfer_id);
  w.I32(h.code);
  w.Bytes(h.message);
  return std::move(w.str());
}

absl::StatusOr<StagedAckHeader> DecodeStagedAck(std::string_view bytes) {
  wire::Reader r(bytes);
  uint32_t magic = 0;
  StagedAckHeader h;
  if (!r.U32(&magic) || magic != kAckMagic || !r.Bytes(&h.transfer_id, 4096) || !r.I32(&h.code) ||
      !r.Bytes(&h.message, 1 << 16) || !r.done()) {
    return Bad("ack header", "truncated or wrong magic");
  }
  return h;
}

absl::Status CheckStagedChunk(const StagedChunkHeader& h, uint64_t data_bytes, int num_layers, int32_t num_blocks,
                              uint64_t block_bytes, uint64_t slot_bytes) {
  const std::string what = absl::StrCat("chunk ", h.chunk, " of layer ", h.layer, " of KV transfer ", h.transfer_id);
  if (h.layer < 0 || h.layer >= num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": layer out of range (", num_layers, " layers)"));
  }
  if (h.runs.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no blocks"));
  for (const BlockRun& r : h.runs) {
    if (r.count <= 0 || r.dst < 0 || r.dst > num_blocks - r.count) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": destination blocks [", r.dst, ", +", r.count,
                                                     ") outside the pool (", num_blocks, " blocks)"));
    }
  }
  const uint64_t want = 2 * static_cast<uint64_t>(h.blocks()) * block_bytes;
  if (data_bytes != want || data_bytes > slot_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", data_bytes, " bytes of data, expected ", want,
                                                   " (staging slots hold ", slot_bytes, ")"));
  }
  return absl::OkStatus();
}

int32_t StagedBlocksPerChunk(uint64_t local_slot_bytes, uint64_t remote_slot_bytes, uint64_t block_bytes) {
  if (block_bytes == 0) return 0;
  const uint64_t n = std::min(local_slot_bytes, remote_slot_bytes) / (2 * block_bytes);
  return static_cast<int32_t>(std::min<uint64_t>(n, 1u << 30));
}

}  // namespace tandem
