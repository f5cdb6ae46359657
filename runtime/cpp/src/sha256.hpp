// SHA-256 (FIPS 180-4) of files: how a bundle's files are checked against the sha256 its manifest records,
// as runtime/bundle.py does with hashlib. Written here (about a hundred lines) so the library needs no crypto
// library on the device.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace atrt {

class Sha256 {
 public:
  Sha256();
  void update(const unsigned char* data, std::size_t size);
  std::string hex_digest();  // finishes the hash; lowercase hex of the 32-byte digest

 private:
  void compress(const unsigned char* block);
  std::array<std::uint32_t, 8> state_;
  std::array<unsigned char, 64> pending_{};
  std::size_t pending_size_ = 0;
  std::uint64_t total_bytes_ = 0;
};

// Lowercase hex sha256 of a file's bytes; false (and `error` set) when it cannot be read.
bool file_sha256(const std::string& path, std::string& digest, std::string& error);

}  // namespace atrt
