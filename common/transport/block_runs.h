// Planning the copies of one layer's blocks: which source blocks go to
// which destination blocks, grouped so that each copy moves as many bytes
// as it can. Pure functions (no memory touched), shared by the CUDA IPC
// and staged UCX transports and tested on their own.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tandem {

// `count` blocks starting at `src` in the source pool go to `count` blocks
// starting at `dst` in the destination pool.
struct BlockRun {
  int32_t src = 0;
  int32_t dst = 0;
  int32_t count = 0;
  bool operator==(const BlockRun&) const = default;
};

// Runs of blocks consecutive on both sides, in the order given (token
// order). `src` and `dst` have the same length.
std::vector<BlockRun> PlanBlockRuns(std::span<const int32_t> src, std::span<const int32_t> dst);

// One staging buffer's worth of one layer: the runs (a run longer than the
// chunk is split across chunks) and their total block count. A chunk's
// bytes are laid out K of every run in order, then V of every run in
// order: 2 * blocks * block_bytes bytes.
struct StagingChunk {
  std::vector<BlockRun> runs;
  int32_t blocks = 0;
  bool operator==(const StagingChunk&) const = default;
};

// Consecutive slices of `runs` holding at most `max_blocks` (> 0) blocks
// each; every block of `runs` is in exactly one chunk, in order.
std::vector<StagingChunk> PlanStagingChunks(const std::vector<BlockRun>& runs, int32_t max_blocks);

}  // namespace tandem
