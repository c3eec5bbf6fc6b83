#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite, then the fuzz targets
# (tests/fuzz) in a clang build of their own, each for a bounded time, then
# the tests again under AddressSanitizer+UBSan and ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 600
# The cluster tests again with every process on mutual TLS, a cluster token
# and an api token (tests/integration/cluster_test_util.h).
TANDEM_TEST_TLS=1 ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 600 -L integration -E "^TlsClusterTest\\."
BUILD_DIR=build-fuzz CC=clang-14 CXX=clang++-14 CMAKE_ARGS="-DTANDEM_FUZZ=ON -DTANDEM_CUDA=OFF" bash tools/build.sh
ctest --test-dir build-fuzz --output-on-failure -j "$(nproc)" --timeout 300

# Sanitizer passes, each in its own clang-14 build without CUDA: the unit
# and integration tests under AddressSanitizer + UndefinedBehaviorSanitizer
# (the processes the integration tests start are sanitized too), then the
# `concurrency`-labelled tests under ThreadSanitizer. tools/sanitizers/ has
# the suppressions (third-party code only) and the shim that shows Debian's
# uninstrumented absl::Mutex to TSan.
#
# Left out of both: assertions on elapsed time, which the sanitizers'
# slowdown breaks without any memory or thread error (a 3% TPOT precision;
# a rate sweep and a 64-request burst whose queued prompts outlast the 10 s
# KV lease on a 2-core machine; a kill timed mid-prefill; the 1000-request
# burst, which its 150 s bound cuts off at ~960 served under ASan; the decode
# worker killed mid-transfer, whose prefill worker waits for UCX to notice
# the dead peer for longer than the requests' lease under ASan, and bounds
# the gaps between request ends; the router killed under load, whose 2 s
# for every block to come back includes a prefill step that the sanitizers
# make several times longer; a KV write hold renewed within a 1 s maximum,
# whose prompts of 8-token chunks take 20 s under ASan; a hold renewed
# between the layers of one step, which needs each of 32 layers to take
# under a third of a 1.5 s maximum, and a sanitized layer on a loaded
# machine takes seconds).
timing='^(BenchTimingTest\.MeasuredTtftAndTpotMatchAKnownServerDelay|BenchSweepTest\..*|DisaggregatedTest\.SixtyFourConcurrentRequestsJoinAndLeaveTheDecodeBatch|IsolationTest\.APrefillWorkerKilledMidPrefillFailsOnlyItsRequests|IsolationTest\.ADecodeWorkerKilledMidTransfer.*|IsolationTest\.ARouterKilledUnderLoad.*|ServingTest\.ABurstOfAThousandRequests.*|KvWriteHoldClusterTest\.AHoldDueDuringALongPromptIsRenewedBeforeAnyPut|KvWriteHoldClusterTest\.AHoldDueWhileItsTransferWritesIsRenewedWithoutAGap)$'
sup="$PWD/tools/sanitizers"
BUILD_DIR=build-asan CC=clang-14 CXX=clang++-14 \
  CMAKE_ARGS="-DTANDEM_SANITIZE=address,undefined -DTANDEM_CUDA=OFF" bash tools/build.sh
ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$sup/lsan.supp" UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$(nproc)" --timeout 900 -E "$timing"
BUILD_DIR=build-tsan CC=clang-14 CXX=clang++-14 TARGETS="concurrency_tests tandem_absl_mutex_tsan" \
  CMAKE_ARGS="-DTANDEM_SANITIZE=thread -DTANDEM_CUDA=OFF" bash tools/build.sh
LD_PRELOAD="$PWD/build-tsan/lib/libtandem_absl_mutex_tsan.so" \
  TSAN_OPTIONS="suppressions=$sup/tsan.supp halt_on_error=1 second_deadlock_stack=1 ignore_noninstrumented_modules=1" \
  ctest --test-dir build-tsan --output-on-failure -j "$(nproc)" --timeout 900 -L concurrency -E "$timing"
