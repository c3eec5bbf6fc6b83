// This router process's instance id: random, drawn once per process, so a
// restarted router (same address) is a different instance. Workers learn it
// when they register (RegisterWorkerResponse.router_instance) and decode
// workers tag each reservation with it (ReserveKvRequest.router_instance),
// so a decode worker can free the reservations of a router it no longer
// reports to instead of waiting for their lease.
#pragma once

#include <string>

namespace tandem::router {

// 16 hex digits; the same value for the life of the process. Thread-safe.
const std::string& RouterInstanceId();

}  // namespace tandem::router
