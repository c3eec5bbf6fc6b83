// The scheduler's flags, defined once for every binary that schedules
// (prefill, decode and aggregated workers, `tandem generate`, the engine
// bench), so that each means the same thing everywhere.
#pragma once

#include "common/engine/scheduler.h"

namespace tandem {

// --max_batch_size, --max_batch_tokens, --chunked_prefill, --max_chunk_tokens,
// --enable_prefix_caching.
// `on_gpu` picks --max_batch_size's default (0): 512 on a GPU (the largest
// captured decode graph), 64 on the CPU, whose steps grow with the batch.
SchedulerOptions SchedulerOptionsFromFlags(bool on_gpu);

}  // namespace tandem
