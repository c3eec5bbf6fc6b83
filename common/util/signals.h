// Orderly shutdown on SIGTERM/SIGINT for the server processes: the signals
// are blocked in every thread (call BlockTerminationSignals() first thing in
// main, before any thread starts) and the main thread waits for one.
#pragma once

namespace tandem {

void BlockTerminationSignals();
// Blocks until SIGTERM or SIGINT arrives; returns the signal number.
int WaitForTerminationSignal();

}  // namespace tandem
