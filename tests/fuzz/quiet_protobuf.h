// Included once by each fuzz target that parses protobuf messages: it
// defines the target's LLVMFuzzerInitialize. Protobuf logs every string
// field with invalid UTF-8, which random input hits tens of thousands of
// times a second; the handler is switched off. SetLogHandler lives in
// protobuf 3.21's stubs/logging.h (protobuf 22+ logs through absl
// instead, where absl's log severity threshold does the same).
#pragma once

#include "google/protobuf/stubs/logging.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}
