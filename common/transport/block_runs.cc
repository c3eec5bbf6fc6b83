#include "common/transport/block_runs.h"

#include <algorithm>

namespace tandem {

std::vector<BlockRun> PlanBlockRuns(std::span<const int32_t> src, std::span<const int32_t> dst) {
  std::vector<BlockRun> runs;
  const size_t n = std::min(src.size(), dst.size());
  for (size_t i = 0; i < n;) {
    int32_t count = 1;
    while (i + count < n && src[i + count] == src[i] + count && dst[i + count] == dst[i] + count) ++count;
    runs.push_back({src[i], dst[i], count});
    i += static_cast<size_t>(count);
  }
  return runs;
}

std::vector<StagingChunk> PlanStagingChunks(const std::vector<BlockRun>& runs, int32_t max_blocks) {
  std::vector<StagingChunk> chunks;
  if (max_blocks <= 0) return chunks;
  StagingChunk current;
  for (BlockRun run : runs) {
    while (run.count > 0) {
      const int32_t take = std::min(run.count, max_blocks - current.blocks);
      current.runs.push_back({run.src, run.dst, take});
      current.blocks += take;
      run.src += take;
      run.dst += take;
      run.count -= take;
      if (current.blocks == max_blocks) {
        chunks.push_back(std::move(current));
        current = StagingChunk();
      }
    }
  }
  if (current.blocks > 0) chunks.push_back(std::move(current));
  return chunks;
}

}  // namespace tandem
