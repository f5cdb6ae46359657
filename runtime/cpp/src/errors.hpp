// The one error type of the library's inside: a status (the C API's atrt_status), a one-line message naming the
// input, what was expected and what was received, and a hint saying what to do (as runtime/errors.py).
// Thrown inside the library only; c_api.cpp turns it into a status code and the thread's last error, so no
// exception ever crosses the C API.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "audiotoken_rt.h"

namespace atrt {

class Error : public std::runtime_error {
 public:
  Error(atrt_status status, const std::string& message, std::string hint = "")
      : std::runtime_error(message), status_(status), hint_(std::move(hint)) {}
  atrt_status status() const { return status_; }
  const std::string& hint() const { return hint_; }

 private:
  atrt_status status_;
  std::string hint_;
};

[[noreturn]] inline void fail(atrt_status status, const std::string& message, const std::string& hint = "") {
  throw Error(status, message, hint);
}

}  // namespace atrt
