// The wire format of the staged UCX transport (ucx_staged_transport.h):
// what the decode worker publishes and the active messages (AMs) the two
// sides exchange. Plain C++, built and tested everywhere.
//
// Descriptor: transport "ucx_staged", endpoint = the decode worker's UCX
// worker address, remote_key = EncodeStagedPoolInfo (its staging slot size
// and count: the sender never makes a chunk larger than a slot).
//
// Per transfer, prefill -> decode:
//   kStagedChunkAm   header StagedChunkHeader (transfer id, layer, chunk
//                    index, destination runs); data, always by rendezvous,
//                    2 * blocks * block_bytes bytes: K of every run in order,
//                    then V of every run in order.
//   kStagedFinishAm  header StagedFinishHeader (transfer id, chunk count);
//                    no data. Sent once every chunk's send completed, with
//                    the reply flag so the decode side can answer.
// decode -> prefill (on the reply endpoint):
//   kStagedAckAm     header StagedAckHeader (transfer id, status): sent once
//                    all counted chunks are copied into the pool (host-to-
//                    device done) or the transfer failed.
// Integers little-endian (wire_codec.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/transport/block_runs.h"

namespace tandem {

inline constexpr unsigned kStagedChunkAm = 41;
inline constexpr unsigned kStagedFinishAm = 42;
inline constexpr unsigned kStagedAckAm = 43;

struct StagedPoolInfo {
  uint64_t slot_bytes = 0;
  uint32_t slots = 0;
  bool operator==(const StagedPoolInfo&) const = default;
};

struct StagedChunkHeader {
  std::string transfer_id;
  int32_t layer = 0;
  int32_t chunk = 0;
  std::vector<BlockRun> runs;  // only dst and count travel; src is 0 on receipt
  int64_t blocks() const;
  bool operator==(const StagedChunkHeader&) const = default;
};

struct StagedFinishHeader {
  std::string transfer_id;
  uint32_t chunks = 0;
  bool operator==(const StagedFinishHeader&) const = default;
};

struct StagedAckHeader {
  std::string transfer_id;
  int32_t code = 0;  // absl::StatusCode
  std::string message;
  bool operator==(const StagedAckHeader&) const = default;
};

std::string EncodeStagedPoolInfo(const StagedPoolInfo& info);
absl::StatusOr<StagedPoolInfo> DecodeStagedPoolInfo(std::string_view bytes, std::string_view owner);
std::string EncodeStagedChunk(const StagedChunkHeader& h);
absl::StatusOr<StagedChunkHeader> DecodeStagedChunk(std::string_view bytes);
std::string EncodeStagedFinish(const StagedFinishHeader& h);
absl::StatusOr<StagedFinishHeader> DecodeStagedFinish(std::string_view bytes);
std::string EncodeStagedAck(const StagedAckHeader& h);
absl::StatusOr<StagedAckHeader> DecodeStagedAck(std::string_view bytes);

// The decode side's check of an arriving chunk against its pool:
// INVALID_ARGUMENT unless the layer and every destination block are in
// range and `data_bytes` is 2 * blocks * block_bytes and fits a slot.
absl::Status CheckStagedChunk(const StagedChunkHeader& h, uint64_t data_bytes, int num_layers, int32_t num_blocks,
                              uint64_t block_bytes, uint64_t slot_bytes);

// Blocks per chunk: as many K+V blocks as fit both sides' slots (0 if not
// even one does).
int32_t StagedBlocksPerChunk(uint64_t local_slot_bytes, uint64_t remote_slot_bytes, uint64_t block_bytes);

}  // namespace tandem
