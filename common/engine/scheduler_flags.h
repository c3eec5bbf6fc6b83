// The scheduler's flags, defined once for every binary that schedules
// (prefill, decode and aggregated workers, `tandem generate`, the engine
// bench), so that each means the same thing everywhere.
#pragma once

#include "common/engine/scheduler.h"

namespace tandem {

// --max_batch_size, --max_batch_tokens, --chunked_prefill, --max_chunk_tokens.
SchedulerOptions SchedulerOptionsFromFlags();

}  // namespace tandem
