// The external-data locations an ONNX file names, read from its protobuf bytes (runtime/external_data.py's walk):
// ONNX Runtime opens whatever file a tensor's external_data "location" names, and only releases from 1.24.1 on
// refuse one outside the model's folder, so the bundle check refuses a graph naming any file but its engine's
// hash-checked data file. The library links no protobuf, so this reads the wire format directly: a key is a varint
// (field number << 3 | wire type); only the message fields on the way to a TensorProto (onnx.proto's numbers) are
// descended into, and only those whose bytes hold "location" at all; everything else is skipped by its wire type.
//
// Place in the data flow: verify_bundle (manifest.cpp) -> external_locations on every engine graph and variant,
// before an ONNX Runtime session ever opens one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace atrt {

constexpr int kMaxProtobufNesting = 64;  // messages inside messages (runtime/external_data.py's MAX_NESTING)

// Bytes that are not a protobuf message (truncated, a bad wire type, nested too deep); what() is one line.
class MalformedProtobuf : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Every external-data location the ONNX message in data[0, size) names, in file order (repeats kept), as raw
// bytes; MalformedProtobuf for bytes that are not a protobuf message.
std::vector<std::string> external_locations(const std::uint8_t* data, std::size_t size);
// The same for the file at `path`, memory-mapped (the pages of skipped weights are never read); MalformedProtobuf
// as above, std::system_error when the file cannot be opened or mapped.
std::vector<std::string> external_locations(const std::string& path);

}  // namespace atrt
