// A Train call that writes arbitrary bytes, for tests that must send what no CoordinatorClient
// would: bytes that are not a WorkerMessage at all, or messages in unusual encodings.
//
// Thread-compatible.
#ifndef DEMOD_TESTS_SUPPORT_RAW_TRAIN_CALL_H_
#define DEMOD_TESTS_SUPPORT_RAW_TRAIN_CALL_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

namespace demod {

// Opens a Train stream to `target` (plaintext, no token), writes each of `messages` (whatever
// bytes they are), reads until the coordinator ends the stream and returns how it ended.
grpc::Status TrainWithBytes(const std::string& target, const std::vector<std::string>& messages);

}  // namespace demod

#endif  // DEMOD_TESTS_SUPPORT_RAW_TRAIN_CALL_H_
