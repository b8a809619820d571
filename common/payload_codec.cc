// The layouts written and read here are specified, byte by byte, in docs/wire-format.md. A change
// to either must change both, and bump kFormatVersion.
#include "common/payload_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "absl/base/casts.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/byte_coding.h"
#include "common/crc32c.h"
#include "common/sign_mean.h"
#include "common/status_macros.h"

namespace demod {
namespace {

constexpr uint16_t kFormatVersion = 4;
constexpr char kPayloadMagic[] = "DMP1";
constexpr char kAggregateMagic[] = "DMA1";
constexpr size_t kMagicBytes = 4;
// magic, version, total length: the part of the header every message kind shares.
constexpr size_t kFrameHeaderBytes = kMagicBytes + 2 + 8;
constexpr size_t kCrcBytes = 4;
// Frame header + encoding u8 + step u64 + tensor count u32.
constexpr size_t kPayloadHeaderBytes = kFrameHeaderBytes + 1 + 8 + 4;
// Frame header + encoding u8 + step u64 + contributor count u32 (then the ids, then the tensor
// count u32).
constexpr size_t kAggregateHeaderBytes = kFrameHeaderBytes + 1 + 8 + 4;
constexpr size_t kTensorCountBytes = 4;
constexpr size_t kPayloadTensorHeaderBytes = 4 + 4;  // num_chunks, topk
constexpr size_t kAggregateTensorHeaderBytes = 4;    // num_chunks
constexpr int64_t kMaxWireCount = std::numeric_limits<uint32_t>::max();

// Everything the frame checks need to know about one message kind.
struct MessageKind {
  const char* name;        // "payload", "aggregate": as error messages say it
  const char* magic;       // 4 bytes
  const char* other_name;  // the other kind, to name a mix-up
  const char* other_magic;
  size_t min_bytes;  // header + CRC of an empty message
};

constexpr MessageKind kPayloadKind = {"payload", kPayloadMagic, "aggregate", kAggregateMagic,
                                      kPayloadHeaderBytes + kCrcBytes};
constexpr MessageKind kAggregateKind = {"aggregate", kAggregateMagic, "payload", kPayloadMagic,
                                        kAggregateHeaderBytes + kTensorCountBytes + kCrcBytes};

absl::Status Truncated(const MessageKind& kind, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("truncated ", kind.name, ": ", what));
}

// The message without its frame (magic, version, length) and CRC, once those check out. Lengths
// and the checksum are verified before any field the CRC protects is interpreted.
absl::StatusOr<absl::string_view> CheckFrame(absl::string_view bytes, const MessageKind& kind) {
  if (bytes.size() < kind.min_bytes) {
    return Truncated(kind, absl::StrCat(bytes.size(), " bytes, the smallest ", kind.name, " is ",
                                        kind.min_bytes));
  }
  const absl::string_view magic = bytes.substr(0, kMagicBytes);
  if (magic != absl::string_view(kind.magic, kMagicBytes)) {
    if (magic == absl::string_view(kind.other_magic, kMagicBytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected a step ", kind.name, ", got a step ", kind.other_name));
    }
    return absl::InvalidArgumentError(absl::StrCat("not a step ", kind.name, ": bad magic '",
                                                   absl::CHexEscape(magic), "', expected '",
                                                   kind.magic, "'"));
  }
  const uint16_t version = DecodeU16(bytes.data() + kMagicBytes);
  if (version != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported ", kind.name, " format version ",
                                                   version, "; this build reads version ",
                                                   kFormatVersion));
  }
  const uint64_t declared = DecodeU64(bytes.data() + kMagicBytes + 2);
  if (declared > bytes.size()) {
    return Truncated(kind, absl::StrCat(bytes.size(), " bytes, header declares ", declared));
  }
  if (declared < bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("trailing bytes after ", kind.name, ": ",
                                                   bytes.size(), " bytes, header declares ",
                                                   declared));
  }
  const size_t body_end = bytes.size() - kCrcBytes;
  const uint32_t stored = DecodeU32(bytes.data() + body_end);
  const uint32_t computed = Crc32c(bytes.substr(0, body_end));
  if (stored != computed) {
    return absl::DataLossError(absl::StrFormat(
        "%s checksum mismatch: stored 0x%08x, computed 0x%08x", kind.name, stored, computed));
  }
  return bytes.substr(kFrameHeaderBytes, body_end - kFrameHeaderBytes);
}

void PutFrameHeader(const MessageKind& kind, uint64_t total_bytes, std::string* out) {
  out->append(kind.magic, kMagicBytes);
  PutU16(out, kFormatVersion);
  PutU64(out, total_bytes);
}

void PutCrc(std::string* out) { PutU32(out, Crc32c(*out)); }

// Rejects tables this format cannot describe, before any size is computed from them.
absl::Status CheckLayoutFitsWire(const NamedLayout& tensor) {
  const ChunkLayout& layout = tensor.layout;
  const int64_t chunk_size = layout.chunk_size();
  if (chunk_size < 1 || chunk_size > kMaxWireCount) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "': chunk of ",
                                                   chunk_size, " coefficients outside the wire ",
                                                   "format's range [1, ", kMaxWireCount, "]"));
  }
  if (layout.num_chunks() < 1 || layout.num_chunks() > kMaxWireCount) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", tensor.name, "': ", layout.num_chunks(),
                     " chunks outside the wire ", "format's range [1, ", kMaxWireCount, "]"));
  }
  if (layout.topk < 1 || layout.topk > chunk_size) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "': topk ", layout.topk,
                                                   " outside [1, chunk size ", chunk_size, "]"));
  }
  return absl::OkStatus();
}

// The checks every chunk of a payload or an aggregate must pass, each failure with its own
// message. Slow on purpose (a branch per entry): CheckEntries runs it only once the fast test
// below has found something wrong.
absl::Status ExplainBadChunkEntries(const std::string& name, int64_t chunk, const uint32_t* indices,
                                    const float* values, size_t n, int64_t chunk_size) {
  for (size_t i = 0; i < n; ++i) {
    if (indices[i] >= chunk_size) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' chunk ", chunk,
                                                     ": index ", indices[i],
                                                     " out of range for chunk of ", chunk_size));
    }
    if (i > 0 && indices[i] <= indices[i - 1]) {
      if (indices[i] == indices[i - 1]) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", name, "': duplicate index ", indices[i], " in chunk ", chunk));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': indices not increasing in chunk ", chunk, " (",
                       indices[i], " after ", indices[i - 1], ")"));
    }
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' chunk ", chunk,
                                                     ": non-finite value ", values[i], " at index ",
                                                     indices[i]));
    }
  }
  return absl::InternalError(absl::StrCat("tensor '", name, "' chunk ", chunk,
                                          ": entries failed the fast check but not the slow one"));
}

// Whether a chunk's entries pass every check, without branches per entry so that the compiler
// vectorizes it: the coordinator runs it over every entry of every payload. Strictly increasing
// indices whose last is in range are all in range.
bool ChunkEntriesValid(const uint32_t* indices, const float* values, size_t n, int64_t chunk_size) {
  if (n == 0) return true;
  uint32_t bad = 0;
  for (size_t i = 1; i < n; ++i) bad |= static_cast<uint32_t>(indices[i] <= indices[i - 1]);
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], sizeof(bits));
    bad |= static_cast<uint32_t>((bits & 0x7F800000u) == 0x7F800000u);  // infinity or NaN
  }
  return bad == 0 && indices[n - 1] < chunk_size;
}

absl::Status CheckChunkEntries(const std::string& name, int64_t chunk, const uint32_t* indices,
                               const float* values, size_t n, int64_t chunk_size) {
  if (ChunkEntriesValid(indices, values, n, chunk_size)) return absl::OkStatus();
  return ExplainBadChunkEntries(name, chunk, indices, values, n, chunk_size);
}

absl::Status CheckTensorCount(const MessageKind& kind, size_t count, const LayoutTable& table) {
  if (count != table.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind.name, " has ", count, " tensors, table has ", table.size()));
  }
  return absl::OkStatus();
}

void AppendIndices(const std::vector<uint32_t>& indices, int width, std::string* out) {
  const size_t start = out->size();
  out->resize(start + indices.size() * width);
  char* p = &(*out)[start];
  switch (width) {
    case 1:
      for (uint32_t index : indices) *p++ = static_cast<char>(index);
      break;
    case 2:
      for (uint32_t index : indices) {
        EncodeU16(p, static_cast<uint16_t>(index));
        p += 2;
      }
      break;
    default:
      for (uint32_t index : indices) {
        EncodeU32(p, index);
        p += 4;
      }
      break;
  }
}

// A tensor whose chunks are all full carries no indices on the wire (version 2): they can only
// be 0 .. S-1 in every chunk. This is what makes a dense exchange cost only its values.
void FillFullChunks(int64_t num_chunks, int64_t chunk_size, std::vector<uint32_t>* indices) {
  indices->resize(static_cast<size_t>(num_chunks * chunk_size));
  uint32_t* out = indices->data();
  for (int64_t c = 0; c < num_chunks; ++c) {
    for (int64_t i = 0; i < chunk_size; ++i) *out++ = static_cast<uint32_t>(i);
  }
}

bool AllChunksFull(const std::vector<uint32_t>& counts, int64_t chunk_size) {
  return std::all_of(counts.begin(), counts.end(),
                     [chunk_size](uint32_t count) { return count == chunk_size; });
}

void ReadIndices(absl::string_view bytes, int width, std::vector<uint32_t>* indices) {
  const char* p = bytes.data();
  switch (width) {
    case 1:
      for (uint32_t& index : *indices) index = static_cast<unsigned char>(*p++);
      break;
    case 2:
      for (uint32_t& index : *indices) {
        index = DecodeU16(p);
        p += 2;
      }
      break;
    default:
      for (uint32_t& index : *indices) {
        index = DecodeU32(p);
        p += 4;
      }
      break;
  }
}

// Sign means as their codes, `means->bits()` each, packed least significant bit first; the
// unused high bits of the last byte stay zero. False when a value is not one of the table's
// (what was written is then garbage).
bool AppendSignMeans(const std::vector<float>& values, const SignMeanTable& means, char* p) {
  const int bits = means.bits();
  uint64_t pending = 0;  // bits not yet written, the oldest lowest
  int held = 0;
  for (float value : values) {
    const std::optional<uint32_t> code = means.code(value);
    if (!code.has_value()) return false;
    pending |= static_cast<uint64_t>(*code) << held;
    for (held += bits; held >= 8; held -= 8) {
      *p++ = static_cast<char>(pending & 0xFF);
      pending >>= 8;
    }
  }
  if (held > 0) *p = static_cast<char>(pending & 0xFF);
  return true;
}

// `means`: the contributors' table, for kSignMean (aggregates only). False when a sign mean is
// not one of the table's (what was appended is then garbage); other encodings do not fail.
bool AppendValues(const std::vector<float>& values, ValueEncoding encoding, std::string* out,
                  const SignMeanTable* means = nullptr) {
  const size_t start = out->size();
  const auto n = static_cast<int64_t>(values.size());
  out->resize(start + (encoding == ValueEncoding::kSignMean ? means->EncodedBytes(n)
                                                            : EncodedValueBytes(encoding, n)));
  char* p = &(*out)[start];
  switch (encoding) {
    case ValueEncoding::kFloat32:
      for (float value : values) {
        EncodeF32(p, value);
        p += 4;
      }
      break;
    case ValueEncoding::kBFloat16:
      for (float value : values) {
        EncodeU16(p, FloatToBFloat16Saturating(value));
        p += 2;
      }
      break;
    case ValueEncoding::kFloat16:
      for (float value : values) {
        EncodeU16(p, FloatToHalfSaturating(value));
        p += 2;
      }
      break;
    case ValueEncoding::kSign:
      // A byte per 8 values, without a branch on the sign (random signs mispredict half the
      // time); padding bits after the last value stay zero.
      for (size_t first = 0; first < values.size(); first += 8) {
        const size_t end = std::min(values.size(), first + 8);
        unsigned byte = 0;
        for (size_t i = first; i < end; ++i) byte |= unsigned{SignBit(values[i])} << (i - first);
        p[first / 8] = static_cast<char>(byte);
      }
      break;
    case ValueEncoding::kSignMean:
      return AppendSignMeans(values, *means, p);
  }
  return true;
}

// The inverse of AppendSignMeans. Fails for a code beyond the table or nonzero padding bits.
absl::Status ReadSignMeans(absl::string_view bytes, const SignMeanTable& means,
                           const std::string& name, std::vector<float>* values) {
  const int bits = means.bits();
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  uint64_t pending = 0;
  int held = 0;
  for (float& value : *values) {
    for (; held < bits; held += 8) pending |= static_cast<uint64_t>(*p++) << held;
    const auto code = static_cast<uint32_t>(pending & mask);
    pending >>= bits;
    held -= bits;
    if (code >= means.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': sign mean code ", code,
                                                     ", the table has ", means.size()));
    }
    value = means.value(code);
  }
  if (pending != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': nonzero padding bits after the last sign mean"));
  }
  return absl::OkStatus();
}

// Fails only for a kSign tail byte with nonzero padding bits, so that every message has exactly
// one encoding.
absl::Status ReadValues(absl::string_view bytes, ValueEncoding encoding, const std::string& name,
                        std::vector<float>* values, const SignMeanTable* means) {
  const char* p = bytes.data();
  switch (encoding) {
    case ValueEncoding::kFloat32:
      for (float& value : *values) {
        value = DecodeF32(p);
        p += 4;
      }
      break;
    case ValueEncoding::kBFloat16:
      for (float& value : *values) {
        value = BFloat16ToFloat(DecodeU16(p));
        p += 2;
      }
      break;
    case ValueEncoding::kFloat16:
      for (float& value : *values) {
        value = HalfToFloat(DecodeU16(p));
        p += 2;
      }
      break;
    case ValueEncoding::kSign: {
      // A byte at a time, each bit becoming the sign bit of 1.0f: no branch per value, and the
      // eight of a byte vectorize.
      const size_t n = values->size();
      const auto* signs = reinterpret_cast<const unsigned char*>(p);
      float* out = values->data();
      for (size_t byte = 0; byte < (n + 7) / 8; ++byte) {
        const uint32_t bits = signs[byte];
        const size_t count = std::min<size_t>(8, n - byte * 8);
        for (size_t b = 0; b < count; ++b) {
          out[byte * 8 + b] = absl::bit_cast<float>(0x3f800000u | (((bits >> b) & 1u) << 31));
        }
      }
      if (n % 8 != 0 && (static_cast<unsigned char>(p[n / 8]) >> (n % 8)) != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", name, "': nonzero padding bits after the last sign"));
      }
      break;
    }
    case ValueEncoding::kSignMean:
      return ReadSignMeans(bytes, *means, name, values);
  }
  return absl::OkStatus();
}

// A tensor's n entries: its indices from `index_bytes` in `width` bytes each (none when every
// chunk is full: the indices are implied), its values from `value_bytes`.
absl::Status ReadEntries(const NamedLayout& named, uint64_t n, bool full, int width,
                         absl::string_view index_bytes, absl::string_view value_bytes,
                         ValueEncoding encoding, std::vector<uint32_t>* indices,
                         std::vector<float>* values, const SignMeanTable* means = nullptr) {
  values->resize(n);
  if (full) {
    FillFullChunks(named.layout.num_chunks(), named.layout.chunk_size(), indices);
  } else {
    indices->resize(n);
    ReadIndices(index_bytes, width, indices);
  }
  return ReadValues(value_bytes, encoding, named.name, values, means);
}

absl::Status CheckNothingTrails(const ByteReader& reader, absl::string_view what) {
  if (reader.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "trailing bytes after ", what, ": ", reader.remaining(), " bytes after the last tensor"));
}

}  // namespace

int IndexWidth(int64_t chunk_size) {
  if (chunk_size <= 256) return 1;
  if (chunk_size <= 65536) return 2;
  return 4;
}

int CountWidth(int64_t chunk_size) { return IndexWidth(chunk_size + 1); }

namespace {

// One payload tensor against its layout: ValidateStepPayload's check of each tensor.
absl::Status CheckPayloadTensor(const NamedLayout& named, const SparseTensor& tensor) {
  DEMOD_RETURN_IF_ERROR(CheckLayoutFitsWire(named));
  const ChunkLayout& layout = named.layout;
  const auto expected = static_cast<size_t>(layout.num_selected());
  if (tensor.indices.size() != expected || tensor.values.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", named.name, "': ", tensor.indices.size(), " indices and ",
                     tensor.values.size(), " values, expected ", expected, " (",
                     layout.num_chunks(), " chunks x k=", layout.topk, ")"));
  }
  const auto k = static_cast<size_t>(layout.topk);
  for (int64_t c = 0; c < layout.num_chunks(); ++c) {
    const size_t begin = static_cast<size_t>(c) * k;
    DEMOD_RETURN_IF_ERROR(CheckChunkEntries(named.name, c, tensor.indices.data() + begin,
                                            tensor.values.data() + begin, k, layout.chunk_size()));
  }
  return absl::OkStatus();
}

// Below this many entries per thread a decoder reads its tensors on one thread (see
// kEntriesPerThread in aggregation.cc).
constexpr uint64_t kDecodedEntriesPerThread = uint64_t{1} << 13;

// A tensor's entries, located in the message but not yet read.
struct EntriesToRead {
  size_t t;
  uint64_t n;
  bool full;
  int width;
  absl::string_view index_bytes, value_bytes;
};

// Takes the bytes of tensor t's n entries off `reader`: n indices of `width` bytes, then n
// values of `value_bits` each, packed to whole bytes. A truncation error if fewer are left.
absl::StatusOr<EntriesToRead> TakeEntries(ByteReader& reader, const MessageKind& kind, size_t t,
                                          const std::string& name, uint64_t n, bool full, int width,
                                          uint64_t value_bits) {
  const uint64_t entry_bits = 8 * static_cast<uint64_t>(width) + value_bits;
  EntriesToRead read{t, n, full, width, {}, {}};
  if (n > reader.remaining() * 8 / entry_bits || !reader.ReadBytes(n * width, &read.index_bytes) ||
      !reader.ReadBytes((n * value_bits + 7) / 8, &read.value_bytes)) {
    return Truncated(kind, absl::StrCat("tensor '", name, "' needs ", n, " entries, ",
                                        reader.remaining(), " bytes left"));
  }
  return read;
}

// Reads `reads` (each into tensors[read.t], through ReadEntries) over `runner`'s threads, the
// tensors being independent, then checks each with `check` on the same thread. Per tensor, the
// status of the read, and that of the check after a good read, in read_status / check_status
// (indexed like `reads`).
template <typename Tensor, typename Check>
void ReadTensors(const std::vector<EntriesToRead>& reads, const LayoutTable& table,
                 ValueEncoding encoding, const SignMeanTable* means, const TaskRunner& runner,
                 std::vector<Tensor>& tensors, std::vector<absl::Status>& read_status,
                 std::vector<absl::Status>& check_status, const Check& check) {
  read_status.assign(reads.size(), absl::OkStatus());
  check_status.assign(reads.size(), absl::OkStatus());
  uint64_t total = 0;
  for (const EntriesToRead& read : reads) total += read.n;
  const size_t threads =
      ThreadsFor(static_cast<size_t>(total), kDecodedEntriesPerThread, reads.size(), runner);
  const std::vector<size_t> bounds =
      ContiguousShares(reads.size(), threads, [&reads](size_t r) { return reads[r].n; });
  runner.Run(threads, [&](size_t part) {
    for (size_t r = bounds[part]; r < bounds[part + 1]; ++r) {
      const EntriesToRead& read = reads[r];
      Tensor& tensor = tensors[read.t];
      read_status[r] =
          ReadEntries(table[read.t], read.n, read.full, read.width, read.index_bytes,
                      read.value_bytes, encoding, &tensor.indices, &tensor.values, means);
      if (read_status[r].ok()) check_status[r] = check(table[read.t], tensor);
    }
  });
}

absl::Status FirstError(const std::vector<absl::Status>& statuses) {
  for (const absl::Status& status : statuses) DEMOD_RETURN_IF_ERROR(status);
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateStepPayload(const StepPayload& payload, const LayoutTable& table) {
  if (!IsValidValueEncoding(static_cast<uint8_t>(payload.encoding))) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid value encoding ", static_cast<int>(payload.encoding)));
  }
  DEMOD_RETURN_IF_ERROR(CheckTensorCount(kPayloadKind, payload.tensors.size(), table));
  for (size_t t = 0; t < table.size(); ++t) {
    DEMOD_RETURN_IF_ERROR(CheckPayloadTensor(table[t], payload.tensors[t]));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> EncodeStepPayload(const StepPayload& payload,
                                              const LayoutTable& table) {
  DEMOD_RETURN_IF_ERROR(ValidateStepPayload(payload, table));
  uint64_t total = kPayloadHeaderBytes + kCrcBytes;
  for (size_t t = 0; t < table.size(); ++t) {
    const ChunkLayout& layout = table[t].layout;
    const int64_t n = layout.num_selected();
    const bool full = layout.topk == layout.chunk_size();
    total += kPayloadTensorHeaderBytes + (full ? 0 : n * IndexWidth(layout.chunk_size())) +
             EncodedValueBytes(payload.encoding, n);
  }
  std::string out;
  out.reserve(total);
  PutFrameHeader(kPayloadKind, total, &out);
  PutU8(&out, static_cast<uint8_t>(payload.encoding));
  PutU64(&out, static_cast<uint64_t>(payload.step));
  PutU32(&out, static_cast<uint32_t>(table.size()));
  for (size_t t = 0; t < table.size(); ++t) {
    const ChunkLayout& layout = table[t].layout;
    PutU32(&out, static_cast<uint32_t>(layout.num_chunks()));
    PutU32(&out, static_cast<uint32_t>(layout.topk));
    if (layout.topk != layout.chunk_size()) {
      AppendIndices(payload.tensors[t].indices, IndexWidth(layout.chunk_size()), &out);
    }
    AppendValues(payload.tensors[t].values, payload.encoding, &out);
  }
  PutCrc(&out);
  return out;
}

absl::StatusOr<StepPayload> DecodeStepPayload(absl::string_view bytes, const LayoutTable& table,
                                              const TaskRunner& runner) {
  DEMOD_ASSIGN_OR_RETURN(const absl::string_view body, CheckFrame(bytes, kPayloadKind));
  ByteReader reader(body);
  uint8_t raw_encoding;
  uint64_t step;
  uint32_t tensor_count;
  if (!reader.ReadU8(&raw_encoding) || !reader.ReadU64(&step) || !reader.ReadU32(&tensor_count)) {
    return Truncated(kPayloadKind, "header");
  }
  if (!IsValidValueEncoding(raw_encoding)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown value encoding ", static_cast<int>(raw_encoding),
                     " in payload; valid: 0 (f32), 1 (bf16), 2 (f16), 3 (sign)"));
  }
  DEMOD_RETURN_IF_ERROR(CheckTensorCount(kPayloadKind, tensor_count, table));

  StepPayload payload;
  payload.step = static_cast<int64_t>(step);
  payload.encoding = static_cast<ValueEncoding>(raw_encoding);
  payload.tensors.resize(table.size());
  // Every tensor's entries are located first (their sizes follow from the table), then read
  // and checked in parallel. Errors are reported as one pass in message order would: a
  // tensor's unreadable entries before a later tensor's bad header, bad entries only once the
  // whole message has parsed.
  std::vector<EntriesToRead> reads;
  const absl::Status located = [&]() -> absl::Status {
    for (size_t t = 0; t < table.size(); ++t) {
      const NamedLayout& named = table[t];
      DEMOD_RETURN_IF_ERROR(CheckLayoutFitsWire(named));
      const ChunkLayout& layout = named.layout;
      uint32_t num_chunks, topk;
      if (!reader.ReadU32(&num_chunks) || !reader.ReadU32(&topk)) {
        return Truncated(kPayloadKind, absl::StrCat("tensor '", named.name, "' header"));
      }
      if (num_chunks != layout.num_chunks() || topk != layout.topk) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", named.name, "': payload has ", num_chunks, " chunks of k=", topk,
            ", table expects ", layout.num_chunks(), " chunks of k=", layout.topk));
      }
      // From here on sizes come from the table, which bounds them to 2^64 before any product.
      const uint64_t n = static_cast<uint64_t>(num_chunks) * topk;
      const bool full = layout.topk == layout.chunk_size();
      const int width = full ? 0 : IndexWidth(layout.chunk_size());
      const uint64_t value_bits =
          payload.encoding == ValueEncoding::kSign
              ? 1
              : 8 * static_cast<uint64_t>(EncodedValueBytes(payload.encoding, 1));
      DEMOD_ASSIGN_OR_RETURN(EntriesToRead read, TakeEntries(reader, kPayloadKind, t, named.name, n,
                                                             full, width, value_bits));
      reads.push_back(read);
    }
    return CheckNothingTrails(reader, "payload");
  }();
  std::vector<absl::Status> read_status, check_status;
  ReadTensors(reads, table, payload.encoding, /*means=*/nullptr, runner, payload.tensors,
              read_status, check_status, CheckPayloadTensor);
  DEMOD_RETURN_IF_ERROR(FirstError(read_status));
  DEMOD_RETURN_IF_ERROR(located);
  DEMOD_RETURN_IF_ERROR(FirstError(check_status));
  return payload;
}

namespace {

// Aggregate values travel as f32, bf16, f16 or sign means (the means of signs are not signs).
absl::Status CheckAggregateEncoding(uint8_t raw) {
  const auto encoding = static_cast<ValueEncoding>(raw);
  if (raw > static_cast<uint8_t>(ValueEncoding::kSignMean) || encoding == ValueEncoding::kSign) {
    return absl::InvalidArgumentError(
        absl::StrCat("aggregate value encoding ", static_cast<int>(raw),
                     " is not one of 0 (f32), 1 (bf16), 2 (f16), 4 (sign-mean)"));
  }
  return absl::OkStatus();
}

// The sign means of `contributors`, for kSignMean: INVALID_ARGUMENT when there are none or
// more than a table holds.
absl::StatusOr<const SignMeanTable*> SignMeansOf(ValueEncoding encoding, uint64_t contributors) {
  if (encoding != ValueEncoding::kSignMean) return nullptr;
  if (contributors < 1 || contributors > SignMeanTable::kMaxContributors) {
    return absl::InvalidArgumentError(absl::StrCat("sign means of ", contributors,
                                                   " contributors; they take 1 to ",
                                                   SignMeanTable::kMaxContributors));
  }
  return &SignMeanTable::For(static_cast<uint32_t>(contributors));
}

// Whether every value is exactly representable in `encoding`, so that encoding loses nothing.
// `means`: the table, for kSignMean.
bool ValuesRepresentable(const std::vector<float>& values, ValueEncoding encoding,
                         const SignMeanTable* means) {
  if (encoding == ValueEncoding::kFloat32) return true;
  if (encoding == ValueEncoding::kSignMean) {
    return std::all_of(values.begin(), values.end(),
                       [means](float value) { return means->code(value).has_value(); });
  }
  uint32_t lost = 0;
  if (encoding == ValueEncoding::kBFloat16) {  // the common case, and a loop that vectorizes
    for (float value : values) lost |= absl::bit_cast<uint32_t>(value) & 0xFFFF;
    return lost == 0;
  }
  for (float value : values) {
    lost |=
        absl::bit_cast<uint32_t>(QuantizeValue(encoding, value)) ^ absl::bit_cast<uint32_t>(value);
  }
  return lost == 0;
}

// The aggregate's own fields, as ValidateStepAggregate checks them.
absl::Status CheckAggregateHeader(ValueEncoding encoding,
                                  const std::vector<uint32_t>& contributors) {
  DEMOD_RETURN_IF_ERROR(CheckAggregateEncoding(static_cast<uint8_t>(encoding)));
  DEMOD_RETURN_IF_ERROR(SignMeansOf(encoding, contributors.size()).status());
  for (size_t i = 1; i < contributors.size(); ++i) {
    const uint32_t previous = contributors[i - 1];
    const uint32_t current = contributors[i];
    if (current == previous) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate contributor ", current));
    }
    if (current < previous) {
      return absl::InvalidArgumentError(
          absl::StrCat("contributors not increasing: ", current, " after ", previous));
    }
  }
  return absl::OkStatus();
}

absl::Status NotRepresentableError(const NamedLayout& named, ValueEncoding encoding) {
  return absl::InvalidArgumentError(absl::StrCat(
      "tensor '", named.name, "': a value is not exactly ", ValueEncodingName(encoding)));
}

// One tensor of an aggregate, as ValidateStepAggregate checks it. Without `check_values` the
// caller checks that every value is representable in `encoding` (an encoder that looks every
// value up anyway).
absl::Status CheckAggregateTensor(const NamedLayout& named, const AggregateTensor& tensor,
                                  ValueEncoding encoding, const SignMeanTable* means,
                                  bool check_values = true) {
  DEMOD_RETURN_IF_ERROR(CheckLayoutFitsWire(named));
  const ChunkLayout& layout = named.layout;
  const std::vector<uint64_t>& offsets = tensor.chunk_offsets;
  const auto num_chunks = static_cast<size_t>(layout.num_chunks());
  const auto prefix = [&named] { return absl::StrCat("tensor '", named.name, "': "); };
  if (offsets.size() != num_chunks + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix(), offsets.size(), " chunk offsets, expected ", num_chunks + 1, " (chunks + 1)"));
  }
  if (offsets.front() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix(), "chunk offsets start at ", offsets.front(), ", not 0"));
  }
  if (tensor.values.size() != tensor.indices.size()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix(), tensor.indices.size(), " indices but ",
                                                   tensor.values.size(), " values"));
  }
  if (offsets.back() != tensor.indices.size()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix(), "chunk offsets end at ",
                                                   offsets.back(), ", not at the ",
                                                   tensor.indices.size(), " entries"));
  }
  // Every offset is checked before any chunk's entries are touched: with the end pinned to
  // indices.size(), non-decreasing offsets keep every chunk's range in bounds.
  for (size_t c = 0; c < num_chunks; ++c) {
    if (offsets[c + 1] < offsets[c]) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix(), "chunk offsets decrease at chunk ", c));
    }
  }
  if (check_values && !ValuesRepresentable(tensor.values, encoding, means)) {
    return NotRepresentableError(named, encoding);
  }
  for (size_t c = 0; c < num_chunks; ++c) {
    if (offsets[c + 1] - offsets[c] > static_cast<uint64_t>(layout.chunk_size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", named.name, "' chunk ", c, ": ", offsets[c + 1] - offsets[c],
                       " entries, more than the chunk's ", layout.chunk_size(), " coefficients"));
    }
    DEMOD_RETURN_IF_ERROR(CheckChunkEntries(
        named.name, static_cast<int64_t>(c), tensor.indices.data() + offsets[c],
        tensor.values.data() + offsets[c], offsets[c + 1] - offsets[c], layout.chunk_size()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateStepAggregate(const StepAggregate& aggregate, const LayoutTable& table) {
  DEMOD_RETURN_IF_ERROR(CheckAggregateHeader(aggregate.encoding, aggregate.contributors));
  DEMOD_RETURN_IF_ERROR(CheckTensorCount(kAggregateKind, aggregate.tensors.size(), table));
  DEMOD_ASSIGN_OR_RETURN(const SignMeanTable* means,
                         SignMeansOf(aggregate.encoding, aggregate.contributors.size()));
  for (size_t t = 0; t < table.size(); ++t) {
    DEMOD_RETURN_IF_ERROR(CheckAggregateTensor(table[t], aggregate.tensors[t], aggregate.encoding,
                                               means, /*check_values=*/true));
  }
  return absl::OkStatus();
}

absl::Status AppendAggregateTensorSection(const NamedLayout& named, const AggregateTensor& tensor,
                                          ValueEncoding encoding, uint64_t contributors,
                                          std::string* out) {
  DEMOD_ASSIGN_OR_RETURN(const SignMeanTable* means, SignMeansOf(encoding, contributors));
  // A sign mean is looked up in the table as it is encoded: that lookup is its check.
  const bool encoder_checks_values = encoding == ValueEncoding::kSignMean;
  DEMOD_RETURN_IF_ERROR(
      CheckAggregateTensor(named, tensor, encoding, means, !encoder_checks_values));
  const size_t start = out->size();
  const ChunkLayout& layout = named.layout;
  const uint64_t n = tensor.indices.size();
  const bool full = n == static_cast<uint64_t>(layout.num_elements());
  out->reserve(out->size() + kAggregateTensorHeaderBytes +
               layout.num_chunks() * CountWidth(layout.chunk_size()) +
               n * (full ? 0 : IndexWidth(layout.chunk_size())) +
               (means != nullptr ? means->EncodedBytes(static_cast<int64_t>(n))
                                 : EncodedValueBytes(encoding, static_cast<int64_t>(n))));
  PutU32(out, static_cast<uint32_t>(layout.num_chunks()));
  std::vector<uint32_t> counts(tensor.chunk_offsets.size() - 1);
  for (size_t c = 0; c < counts.size(); ++c) {
    counts[c] = static_cast<uint32_t>(tensor.chunk_offsets[c + 1] - tensor.chunk_offsets[c]);
  }
  AppendIndices(counts, CountWidth(layout.chunk_size()), out);
  if (!AllChunksFull(counts, layout.chunk_size())) {
    AppendIndices(tensor.indices, IndexWidth(layout.chunk_size()), out);
  }
  if (!AppendValues(tensor.values, encoding, out, means)) {
    out->resize(start);  // nothing of the section stays
    return NotRepresentableError(named, encoding);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FinishStepAggregate(int64_t step, ValueEncoding encoding,
                                                const std::vector<uint32_t>& contributors,
                                                const LayoutTable& table,
                                                const std::vector<std::string>& sections) {
  DEMOD_RETURN_IF_ERROR(CheckAggregateHeader(encoding, contributors));
  DEMOD_RETURN_IF_ERROR(CheckTensorCount(kAggregateKind, table.size(), table));
  if (contributors.size() > static_cast<uint64_t>(kMaxWireCount)) {
    return absl::InvalidArgumentError(
        absl::StrCat(contributors.size(), " contributors, more than the format's ", kMaxWireCount));
  }
  uint64_t total = kAggregateHeaderBytes + 4 * contributors.size() + kTensorCountBytes + kCrcBytes;
  for (const std::string& section : sections) total += section.size();
  std::string out;
  out.reserve(total);
  PutFrameHeader(kAggregateKind, total, &out);
  PutU8(&out, static_cast<uint8_t>(encoding));
  PutU64(&out, static_cast<uint64_t>(step));
  PutU32(&out, static_cast<uint32_t>(contributors.size()));
  for (uint32_t id : contributors) PutU32(&out, id);
  PutU32(&out, static_cast<uint32_t>(table.size()));
  for (const std::string& section : sections) out.append(section);
  PutCrc(&out);
  return out;
}

absl::StatusOr<std::string> EncodeStepAggregate(const StepAggregate& aggregate,
                                                const LayoutTable& table) {
  DEMOD_RETURN_IF_ERROR(CheckAggregateHeader(aggregate.encoding, aggregate.contributors));
  DEMOD_RETURN_IF_ERROR(CheckTensorCount(kAggregateKind, aggregate.tensors.size(), table));
  std::vector<std::string> sections(1);
  for (size_t t = 0; t < table.size(); ++t) {
    DEMOD_RETURN_IF_ERROR(
        AppendAggregateTensorSection(table[t], aggregate.tensors[t], aggregate.encoding,
                                     aggregate.contributors.size(), &sections[0]));
  }
  return FinishStepAggregate(aggregate.step, aggregate.encoding, aggregate.contributors, table,
                             sections);
}

absl::StatusOr<StepAggregate> DecodeStepAggregate(absl::string_view bytes, const LayoutTable& table,
                                                  const TaskRunner& runner) {
  DEMOD_ASSIGN_OR_RETURN(const absl::string_view body, CheckFrame(bytes, kAggregateKind));
  ByteReader reader(body);
  StepAggregate aggregate;
  uint8_t raw_encoding;
  uint64_t step;
  uint32_t contributor_count;
  if (!reader.ReadU8(&raw_encoding) || !reader.ReadU64(&step) ||
      !reader.ReadU32(&contributor_count)) {
    return Truncated(kAggregateKind, "header");
  }
  DEMOD_RETURN_IF_ERROR(CheckAggregateEncoding(raw_encoding));
  aggregate.encoding = static_cast<ValueEncoding>(raw_encoding);
  aggregate.step = static_cast<int64_t>(step);
  absl::string_view id_bytes;
  if (contributor_count > reader.remaining() / 4 ||
      !reader.ReadBytes(contributor_count * size_t{4}, &id_bytes)) {
    return Truncated(kAggregateKind, absl::StrCat(contributor_count, " contributors, ",
                                                  reader.remaining(), " bytes left"));
  }
  aggregate.contributors.resize(contributor_count);
  ReadIndices(id_bytes, 4, &aggregate.contributors);
  DEMOD_ASSIGN_OR_RETURN(const SignMeanTable* means,
                         SignMeansOf(aggregate.encoding, contributor_count));
  uint32_t tensor_count;
  if (!reader.ReadU32(&tensor_count)) return Truncated(kAggregateKind, "tensor count");
  DEMOD_RETURN_IF_ERROR(CheckTensorCount(kAggregateKind, tensor_count, table));

  aggregate.tensors.resize(table.size());
  // As in DecodeStepPayload: entries located tensor by tensor, then read in parallel.
  std::vector<EntriesToRead> reads;
  const absl::Status located = [&]() -> absl::Status {
    std::vector<uint32_t> counts;
    for (size_t t = 0; t < table.size(); ++t) {
      const NamedLayout& named = table[t];
      DEMOD_RETURN_IF_ERROR(CheckLayoutFitsWire(named));
      const ChunkLayout& layout = named.layout;
      uint32_t num_chunks;
      if (!reader.ReadU32(&num_chunks)) {
        return Truncated(kAggregateKind, absl::StrCat("tensor '", named.name, "' header"));
      }
      if (num_chunks != layout.num_chunks()) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", named.name, "': aggregate has ",
                                                       num_chunks, " chunks, table expects ",
                                                       layout.num_chunks()));
      }
      const int count_width = CountWidth(layout.chunk_size());
      absl::string_view count_bytes;
      if (!reader.ReadBytes(static_cast<size_t>(num_chunks) * count_width, &count_bytes)) {
        return Truncated(kAggregateKind, absl::StrCat("tensor '", named.name, "' chunk counts"));
      }
      counts.resize(num_chunks);
      ReadIndices(count_bytes, count_width, &counts);
      AggregateTensor& tensor = aggregate.tensors[t];
      tensor.chunk_offsets.resize(static_cast<size_t>(num_chunks) + 1);
      tensor.chunk_offsets[0] = 0;
      for (size_t c = 0; c < num_chunks; ++c) {
        // Bounding each count by the chunk size keeps the sum far from overflow.
        if (counts[c] > layout.chunk_size()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "tensor '", named.name, "' chunk ", c, ": ", counts[c],
              " entries, more than the chunk's ", layout.chunk_size(), " coefficients"));
        }
        tensor.chunk_offsets[c + 1] = tensor.chunk_offsets[c] + counts[c];
      }
      const uint64_t n = tensor.chunk_offsets.back();
      const bool full = AllChunksFull(counts, layout.chunk_size());
      const int width = full ? 0 : IndexWidth(layout.chunk_size());
      // Sign means take a few bits each; the other encodings whole bytes.
      const uint64_t value_bits = means != nullptr
                                      ? static_cast<uint64_t>(means->bits())
                                      : (aggregate.encoding == ValueEncoding::kFloat32 ? 32 : 16);
      DEMOD_ASSIGN_OR_RETURN(EntriesToRead read, TakeEntries(reader, kAggregateKind, t, named.name,
                                                             n, full, width, value_bits));
      reads.push_back(read);
    }
    return CheckNothingTrails(reader, "aggregate");
  }();
  std::vector<absl::Status> read_status, check_status;
  // What ValidateStepAggregate checks, each tensor on the thread that read it, but not the
  // values: they are the encoding's by construction (a sign-mean code beyond the table failed
  // ReadEntries), and looking each one up again would only cost time.
  const ValueEncoding encoding = aggregate.encoding;
  ReadTensors(reads, table, encoding, means, runner, aggregate.tensors, read_status, check_status,
              [encoding, means](const NamedLayout& named, const AggregateTensor& tensor) {
                return CheckAggregateTensor(named, tensor, encoding, means,
                                            /*check_values=*/false);
              });
  DEMOD_RETURN_IF_ERROR(FirstError(read_status));
  DEMOD_RETURN_IF_ERROR(located);
  DEMOD_RETURN_IF_ERROR(CheckAggregateHeader(aggregate.encoding, aggregate.contributors));
  DEMOD_RETURN_IF_ERROR(FirstError(check_status));
  return aggregate;
}

}  // namespace demod
