// ONNX bytes -> the external-data locations they name (see external_data.hpp).
#include "external_data.hpp"

#include <cerrno>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace atrt {
namespace {

// The onnx.proto messages on the paths that reach a TensorProto (initializers, sparse initializers, attribute
// tensors, subgraphs of If/Loop/Scan, functions, training graphs): runtime/external_data.py's ONNX_MESSAGES.
enum class Message {
  kNone,  // a field not descended into
  kModel,
  kTrainingInfo,
  kFunction,
  kGraph,
  kNode,
  kAttribute,
  kSparseTensor,
  kTensor,
  kStringStringEntry,  // key = 1, value = 2 (strings)
};

// The message type that field `number` of a `message` holds, when it leads to a TensorProto.
Message inner_message(Message message, std::uint64_t number) {
  switch (message) {
    case Message::kModel:
      return number == 7 ? Message::kGraph : number == 20 ? Message::kTrainingInfo
                                           : number == 25 ? Message::kFunction : Message::kNone;
    case Message::kTrainingInfo:
      return number == 1 || number == 2 ? Message::kGraph : Message::kNone;
    case Message::kFunction:
      return number == 7 ? Message::kNode : number == 11 ? Message::kAttribute : Message::kNone;
    case Message::kGraph:
      return number == 1 ? Message::kNode : number == 5 ? Message::kTensor
                                          : number == 15 ? Message::kSparseTensor : Message::kNone;
    case Message::kNode:
      return number == 5 ? Message::kAttribute : Message::kNone;
    case Message::kAttribute:
      return number == 5 || number == 10 ? Message::kTensor
             : number == 6 || number == 11 ? Message::kGraph
             : number == 22 || number == 23 ? Message::kSparseTensor : Message::kNone;
    case Message::kSparseTensor:
      return number == 1 || number == 2 ? Message::kTensor : Message::kNone;
    case Message::kTensor:
      return number == 13 ? Message::kStringStringEntry : Message::kNone;  // external_data: key/value pairs
    default:
      return Message::kNone;
  }
}

constexpr char kLocationKey[] = "location";  // the key of the entry naming the file, as its bytes stand
constexpr std::size_t kLocationKeySize = sizeof kLocationKey - 1;
enum WireType : std::uint64_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

struct Varint {
  std::uint64_t value;  // its low 64 bits
  bool wide;            // it has bits beyond those 64 (protobuf's varints run to 70)
};

// The varint at `pos`; `pos` moves past it.
Varint read_varint(const std::uint8_t* buf, std::size_t& pos, std::size_t end) {
  Varint v{0, false};
  for (unsigned shift = 0;; shift += 7) {
    if (pos >= end || shift > 63) throw MalformedProtobuf("varint runs past byte " + std::to_string(pos));
    const std::uint8_t byte = buf[pos++];
    const std::uint64_t bits = byte & 0x7F;
    v.value |= bits << shift;
    if (shift > 57 && (bits >> (64 - shift)) != 0) v.wide = true;
    if (byte < 0x80) return v;
  }
}

struct Field {
  std::uint64_t number;
  std::size_t start, end;
};

// Every length-delimited field of the message in buf[start, end), in order, to `visit`.
template <typename Visit>
void for_each_length_delimited(const std::uint8_t* buf, std::size_t start, std::size_t end, Visit visit) {
  for (std::size_t pos = start; pos < end;) {
    const Varint key = read_varint(buf, pos, end);
    const std::uint64_t wire_type = key.value & 7;  // the low bits are exact even in a wide key
    const std::uint64_t number = key.wide ? ~std::uint64_t{0} : key.value >> 3;  // a wide number is in no table
    if (wire_type == kLengthDelimited) {
      const Varint length = read_varint(buf, pos, end);
      if (length.wide || length.value > end - pos) {
        throw MalformedProtobuf("field " + std::to_string(number) + " at byte " + std::to_string(pos) +
                                " runs past its message");
      }
      visit(Field{number, pos, pos + static_cast<std::size_t>(length.value)});
      pos += static_cast<std::size_t>(length.value);
      continue;
    }
    std::size_t skip = 0;
    if (wire_type == kVarint) {
      read_varint(buf, pos, end);
    } else if (wire_type == kFixed64) {
      skip = 8;
    } else if (wire_type == kFixed32) {
      skip = 4;
    } else {  // 3 and 4 (groups) do not occur in onnx.proto; anything else is not protobuf
      throw MalformedProtobuf("wire type " + std::to_string(wire_type) + " at byte " + std::to_string(pos));
    }
    if (skip > end - pos) throw MalformedProtobuf("field " + std::to_string(number) + " runs past its message");
    pos += skip;
  }
}

bool holds_location_key(const std::uint8_t* buf, std::size_t start, std::size_t end) {
  return ::memmem(buf + start, end - start, kLocationKey, kLocationKeySize) != nullptr;
}

void collect_locations(const std::uint8_t* buf, std::size_t start, std::size_t end, Message message, int depth,
                       std::vector<std::string>& found) {
  if (depth > kMaxProtobufNesting) {
    throw MalformedProtobuf("messages nested more than " + std::to_string(kMaxProtobufNesting) + " deep");
  }
  if (message == Message::kStringStringEntry) {
    std::string key, value;  // the last of each wins, as protobuf reads a repeated scalar field
    bool has_key = false;
    for_each_length_delimited(buf, start, end, [&](const Field& field) {
      const std::string bytes(reinterpret_cast<const char*>(buf + field.start), field.end - field.start);
      if (field.number == 1) key = bytes, has_key = true;
      if (field.number == 2) value = bytes;
    });
    if (has_key && key == kLocationKey) found.push_back(value);
    return;
  }
  for_each_length_delimited(buf, start, end, [&](const Field& field) {
    const Message inner = inner_message(message, field.number);
    if (inner != Message::kNone && holds_location_key(buf, field.start, field.end)) {  // else it names no file
      collect_locations(buf, field.start, field.end, inner, depth + 1, found);
    }
  });
}

}  // namespace

std::vector<std::string> external_locations(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> found;
  if (size > 0) collect_locations(data, 0, size, Message::kModel, 0, found);
  return found;
}

std::vector<std::string> external_locations(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category());
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::system_error(error, std::generic_category());
  }
  const auto size = static_cast<std::size_t>(info.st_size);
  if (size == 0) {
    ::close(fd);
    return {};
  }
  void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int error = errno;
  ::close(fd);  // the mapping keeps the file
  if (mapped == MAP_FAILED) throw std::system_error(error, std::generic_category());
  struct Unmap {
    void* at;
    std::size_t size;
    ~Unmap() { ::munmap(at, size); }
  } unmap{mapped, size};
  return external_locations(static_cast<const std::uint8_t*>(mapped), size);
}

}  // namespace atrt
