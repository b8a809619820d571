// Early-return helpers for absl::Status / absl::StatusOr, in the style used inside Google
// (Abseil 20220623 does not ship them publicly).
#ifndef DEMOD_COMMON_STATUS_MACROS_H_
#define DEMOD_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DEMOD_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::absl::Status demod_status_ = (expr);         \
    if (!demod_status_.ok()) return demod_status_; \
  } while (0)

#define DEMOD_STATUS_CONCAT_INNER_(a, b) a##b
#define DEMOD_STATUS_CONCAT_(a, b) DEMOD_STATUS_CONCAT_INNER_(a, b)

// DEMOD_ASSIGN_OR_RETURN(auto x, MaybeX()); declares x or returns MaybeX()'s error.
#define DEMOD_ASSIGN_OR_RETURN(lhs, expr) \
  DEMOD_ASSIGN_OR_RETURN_IMPL_(DEMOD_STATUS_CONCAT_(demod_statusor_, __LINE__), lhs, expr)
#define DEMOD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return statusor.status();           \
  lhs = std::move(statusor).value()

#endif  // DEMOD_COMMON_STATUS_MACROS_H_
