// Test assertions on absl::Status and absl::StatusOr that print the status when they fail. The
// ASSERT forms stop the test, so a test never goes on to dereference a failed StatusOr:
//
//   ASSERT_OK(SaveCheckpoint(dir, checkpoint));
//   ASSERT_OK_AND_ASSIGN(LayoutTable table, MakeLayoutTable(shapes, 64, 32));
//   EXPECT_OK(store.Save(run));
//
// ASSERT_OK_AND_ASSIGN declares or assigns `lhs`; like every ASSERT, it belongs in a function
// returning void. A helper that returns a value uses ValueOrStop instead:
//
//   ChunkLayout Layout(...) { return ValueOrStop(MakeChunkLayout(shape, chunk, topk)); }
#ifndef DEMOD_TESTS_SUPPORT_STATUS_MATCHERS_H_
#define DEMOD_TESTS_SUPPORT_STATUS_MATCHERS_H_

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status_macros.h"  // DEMOD_STATUS_CONCAT_

namespace demod {
namespace testing_internal {

inline const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

template <typename T>
::testing::AssertionResult IsOk(const char* expression, const T& value) {
  const absl::Status& status = StatusOf(value);
  if (status.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expression << " is not OK: " << status;
}

}  // namespace testing_internal

// The value of an OK `status_or`. Otherwise the test fails with the status and its program
// stops (ctest runs each test in a program of its own), rather than go on with no value.
template <typename T>
T ValueOrStop(absl::StatusOr<T> status_or) {
  if (!status_or.ok()) {
    ADD_FAILURE() << "not OK: " << status_or.status();
    std::fprintf(stderr, "stopping the test: %s\n", status_or.status().ToString().c_str());
    std::abort();
  }
  return *std::move(status_or);
}

}  // namespace demod

#define EXPECT_OK(expr) EXPECT_PRED_FORMAT1(::demod::testing_internal::IsOk, expr)
#define ASSERT_OK(expr) ASSERT_PRED_FORMAT1(::demod::testing_internal::IsOk, expr)

#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(DEMOD_STATUS_CONCAT_(demod_test_statusor_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  ASSERT_OK(statusor);                                  \
  lhs = std::move(statusor).value()

#endif  // DEMOD_TESTS_SUPPORT_STATUS_MATCHERS_H_
