// A fresh directory for one test, removed with everything in it when the object goes away, so
// test runs leave nothing behind in /tmp.
//
//   ScopedTempDir dir("demod-state");
//   Start(config, dir.path());
//
// Creation failing (no /tmp, or it is full) aborts with a message: a test cannot go on without
// it. Not copyable.
#ifndef DEMOD_TESTS_SUPPORT_SCOPED_TEMP_DIR_H_
#define DEMOD_TESTS_SUPPORT_SCOPED_TEMP_DIR_H_

#include <string>

namespace demod {

class ScopedTempDir {
 public:
  // Creates /tmp/<prefix>-XXXXXX (or below $TMPDIR when set).
  explicit ScopedTempDir(const std::string& prefix);
  ~ScopedTempDir();

  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace demod

#endif  // DEMOD_TESTS_SUPPORT_SCOPED_TEMP_DIR_H_
