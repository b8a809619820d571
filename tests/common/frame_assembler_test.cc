#include "common/frame_assembler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace demod {
namespace {

using ::testing::HasSubstr;

std::string Bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 31 + 7);
  return s;
}

TEST(SplitIntoFramesTest, CoversTheMessageInOrder) {
  const std::string m = Bytes(10);
  std::vector<Frame> frames = SplitIntoFrames(m, 4);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].offset, 0u);
  EXPECT_EQ(frames[1].offset, 4u);
  EXPECT_EQ(frames[2].offset, 8u);
  EXPECT_EQ(frames[2].data.size(), 2u);
  EXPECT_EQ(SplitIntoFrames(m, 10).size(), 1u);
  EXPECT_EQ(SplitIntoFrames("", 4).size(), 1u);  // an empty message still sends one frame
}

TEST(FrameAssemblerTest, ReassemblesWhatSplitCut) {
  for (uint64_t frame : {1u, 3u, 7u, 64u, 1000u}) {
    const std::string m = Bytes(200);
    FrameAssembler assembler(1000, frame);
    std::optional<std::string> out;
    for (const Frame& f : SplitIntoFrames(m, frame)) {
      EXPECT_FALSE(out.has_value());
      auto added = assembler.Add(5, m.size(), f.offset, f.data);
      ASSERT_TRUE(added.ok()) << added.status();
      out = *added;
    }
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(*out, m);
    EXPECT_FALSE(assembler.in_progress());
  }
}

TEST(FrameAssemblerTest, AssemblesOneMessageAfterAnother) {
  FrameAssembler assembler(100, 10);
  EXPECT_EQ(**assembler.Add(1, 3, 0, "abc"), "abc");
  EXPECT_FALSE(assembler.Add(2, 4, 0, "ab")->has_value());
  EXPECT_EQ(**assembler.Add(2, 4, 2, "cd"), "abcd");
  EXPECT_EQ(**assembler.Add(3, 0, 0, ""), "");
}

TEST(FrameAssemblerTest, RejectsEveryInconsistency) {
  struct Case {
    const char* name;
    std::vector<std::tuple<int64_t, uint64_t, uint64_t, std::string>> frames;  // the last fails
    const char* message;
  };
  const std::vector<Case> cases = {
      {"frame too large", {{1, 20, 0, std::string(11, 'x')}}, "exceeds the limit of 10"},
      {"message too large", {{1, 101, 0, "x"}}, "101 bytes exceeds the limit of 100"},
      {"gap", {{1, 8, 0, "abcd"}, {1, 8, 5, "efg"}}, "offset 5, expected 4"},
      {"overlap", {{1, 8, 0, "abcd"}, {1, 8, 3, "defg"}}, "offset 3, expected 4"},
      {"total changes", {{1, 8, 0, "abcd"}, {1, 9, 4, "efgh"}}, "total changed from 8 to 9"},
      {"past the total", {{1, 5, 0, "abcd"}, {1, 5, 4, "ef"}}, "runs past the total of 5"},
      {"interleaved", {{1, 8, 0, "abcd"}, {2, 4, 0, "abcd"}}, "while message 1 is incomplete"},
      {"empty before the end", {{1, 8, 0, "abcd"}, {1, 8, 4, ""}}, "empty frame at offset 4"},
      {"first frame not at 0", {{1, 8, 4, "abcd"}}, "offset 4, expected 0"},
  };
  for (bool moved : {false, true}) {
    for (const Case& c : cases) {
      FrameAssembler assembler(100, 10);
      absl::StatusOr<std::optional<std::string>> result;
      for (const auto& [id, total, offset, data] : c.frames) {
        result = moved ? assembler.AddOwned(id, total, offset, data)
                       : assembler.Add(id, total, offset, absl::string_view(data));
      }
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
      EXPECT_THAT(result.status().message(), HasSubstr(c.message)) << c.name;
      EXPECT_FALSE(assembler.in_progress()) << c.name;
      // The assembler starts afresh after an error.
      EXPECT_EQ(**assembler.Add(9, 2, 0, "ok"), "ok") << c.name;
    }
  }
}

// The rule decided once, for both sides: a restart at offset 0 is an error unless the stream
// allows it (a worker's parameter transfer, which a new donor starts over).
TEST(FrameAssemblerTest, ARestartAtOffsetZeroIsRefusedByDefault) {
  FrameAssembler assembler(1000, 500);
  EXPECT_FALSE(assembler.Add(4, 6, 0, "abc")->has_value());
  absl::StatusOr<std::optional<std::string>> same = assembler.Add(4, 6, 0, "abc");
  EXPECT_EQ(same.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(same.status().message(), HasSubstr("frame at offset 0, expected 3"));
  EXPECT_FALSE(assembler.Add(4, 6, 0, "abc")->has_value());
  absl::StatusOr<std::optional<std::string>> other = assembler.Add(5, 6, 0, "abc");
  EXPECT_THAT(other.status().message(), HasSubstr("while message 4 is incomplete"));
  EXPECT_FALSE(assembler.Add(4, 6, 0, "abc")->has_value());
  EXPECT_FALSE(assembler.AddOwned(5, 3, 0, "xyz").ok());  // whole, but still a restart
}

TEST(FrameAssemblerTest, ARestartAtOffsetZeroStartsTheMessageOverWhereAllowed) {
  FrameAssembler assembler(1000, 500, FrameAssembler::Restarts::kAllowedAtOffsetZero);
  EXPECT_FALSE(assembler.Add(4, 6, 0, "abc")->has_value());
  // Another message (a new donor's parameters, of another step and size) replaces it.
  EXPECT_FALSE(assembler.Add(3, 4, 0, "wx")->has_value());
  EXPECT_EQ(**assembler.Add(3, 4, 2, "yz"), "wxyz");
  EXPECT_FALSE(assembler.in_progress());
  // The same message again from its start.
  EXPECT_FALSE(assembler.Add(7, 6, 0, "abc")->has_value());
  EXPECT_FALSE(assembler.Add(7, 6, 0, "ABC")->has_value());
  EXPECT_EQ(**assembler.Add(7, 6, 3, "DEF"), "ABCDEF");
  // A whole message in one taken frame drops the incomplete one too.
  EXPECT_FALSE(assembler.Add(8, 6, 0, "abc")->has_value());
  EXPECT_EQ(**assembler.AddOwned(9, 3, 0, "xyz"), "xyz");
  EXPECT_FALSE(assembler.in_progress());
  // Everything else is still checked: only offset 0 starts over.
  EXPECT_FALSE(assembler.Add(8, 6, 0, "abc")->has_value());
  EXPECT_THAT(assembler.Add(9, 6, 3, "def").status().message(),
              HasSubstr("while message 8 is incomplete"));
  EXPECT_THAT(assembler.Add(8, 2000, 0, "abc").status().message(),
              HasSubstr("2000 bytes exceeds the limit of 1000"));
}

TEST(FrameAssemblerTest, HandsBackAOneFrameMessageWithoutCopying) {
  FrameAssembler assembler(1000, 500);
  std::string frame = Bytes(300);
  const char* buffer = frame.data();
  absl::StatusOr<std::optional<std::string>> whole =
      assembler.AddOwned(1, 300, 0, std::move(frame));
  ASSERT_TRUE(whole.ok() && whole->has_value());
  EXPECT_EQ(**whole, Bytes(300));
  EXPECT_EQ((*whole)->data(), buffer);
  // Taken frames of a longer message are assembled as the others are.
  EXPECT_FALSE(assembler.AddOwned(2, 6, 0, "abc")->has_value());
  EXPECT_EQ(**assembler.AddOwned(2, 6, 3, "def"), "abcdef");
  EXPECT_EQ(**assembler.AddOwned(3, 0, 0, ""), "");
}

}  // namespace
}  // namespace demod
