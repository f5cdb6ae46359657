// Integers read from JSON that anyone may have written (a bundle's manifest.json, tokenizer.json,
// scheduler_config.json): a JSON integer within the target type's range, else a json::exception that the reader
// turns into its one-line error naming the file. nlohmann's own get<int>() and the like truncate a float and
// convert an out-of-range number with undefined behaviour (1e25 as a tensor dimension: found by fuzzing), or
// silently wrap it (2^32 + 64 read as 64).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace atrt {

template <typename T>
T json_integer(const nlohmann::json& value) {
  using limits = std::numeric_limits<T>;
  if (!value.is_number_integer()) {  // (unsigned integers are integers too)
    throw nlohmann::json::type_error::create(302, std::string("expected an integer, got ") + value.type_name(),
                                             nullptr);
  }
  const bool negative = !value.is_number_unsigned() && value.get<std::int64_t>() < 0;
  const bool fits = negative
                        ? limits::is_signed && value.get<std::int64_t>() >= static_cast<std::int64_t>(limits::min())
                        : value.get<std::uint64_t>() <= static_cast<std::uint64_t>(limits::max());
  if (!fits) throw nlohmann::json::out_of_range::create(406, "integer " + value.dump() + " is out of range", nullptr);
  return negative ? static_cast<T>(value.get<std::int64_t>()) : static_cast<T>(value.get<std::uint64_t>());
}

template <typename T>
std::vector<T> json_integers(const nlohmann::json& values) {
  if (!values.is_array()) {
    throw nlohmann::json::type_error::create(302, std::string("expected an array, got ") + values.type_name(), nullptr);
  }
  std::vector<T> out;
  for (const auto& value : values) out.push_back(json_integer<T>(value));
  return out;
}

}  // namespace atrt
