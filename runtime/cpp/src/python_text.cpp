// Python's text rules for messages (see python_text.hpp). Sources: CPython's unicode_repr (Objects/unicodeobject.c),
// str.lower's final-sigma rule (handle_capital_sigma), float()'s PyFloat_FromString and the underscore rule of
// _Py_string_to_number_with_underscores, and repr(float)'s 'r' format (Python/pystrtod.c): behaviour, not code.
#include "python_text.hpp"

#include <utf8proc.h>

#include <charconv>
#include <clocale>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>

#include <locale.h>

namespace atrt::python {
namespace {

using Points = std::vector<std::int32_t>;

bool is_surrogate(std::int32_t c) { return c >= 0xD800 && c <= 0xDFFF; }

// UTF-8 -> code points, each undecodable byte as U+DC80..U+DCFF (Python's surrogateescape)
Points decode(const std::string& text) {
  Points points;
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const auto size = static_cast<utf8proc_ssize_t>(text.size());
  for (utf8proc_ssize_t at = 0; at < size;) {
    utf8proc_int32_t code = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(bytes + at, size - at, &code);
    if (n <= 0 || is_surrogate(code)) {
      points.push_back(0xDC00 + bytes[at]);
      ++at;
    } else {
      points.push_back(code);
      at += n;
    }
  }
  return points;
}

void append(std::string& out, std::int32_t code) {
  if (code >= 0xDC80 && code <= 0xDCFF) {  // an undecodable byte, back as it came
    out += static_cast<char>(code - 0xDC00);
    return;
  }
  utf8proc_uint8_t bytes[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(code, bytes);
  out.append(reinterpret_cast<const char*>(bytes), static_cast<std::size_t>(n));
}

std::string encode(const Points& points) {
  std::string out;
  for (std::int32_t code : points) append(out, code);
  return out;
}

// str.isprintable() of one character: all but the "Other" and "Separator" categories, the space excepted
bool printable(std::int32_t c) {
  if (c == ' ') return true;
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}

std::string hex(std::int32_t c, int digits) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(static_cast<std::size_t>(digits), '0');
  for (int i = digits - 1; i >= 0; --i, c >>= 4) out[static_cast<std::size_t>(i)] = kDigits[c & 0xF];
  return out;
}

// Unicode's Cased and Case_Ignorable properties, as far as utf8proc tells them: letters with a case or a case
// mapping; marks, format characters, modifiers and the word-internal punctuation (Word_Break MidLetter, MidNumLet,
// Single_Quote)
bool cased(std::int32_t c) {
  const utf8proc_category_t category = utf8proc_category(c);
  return category == UTF8PROC_CATEGORY_LU || category == UTF8PROC_CATEGORY_LL || category == UTF8PROC_CATEGORY_LT ||
         utf8proc_tolower(c) != c || utf8proc_toupper(c) != c;
}

bool case_ignorable(std::int32_t c) {
  switch (c) {
    case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x5F4: case 0x2018: case 0x2019: case 0x2024:
    case 0x2027: case 0xFE13: case 0xFE52: case 0xFE55: case 0xFF07: case 0xFF0E: case 0xFF1A:
      return true;
    default:
      break;
  }
  const utf8proc_category_t category = utf8proc_category(c);
  return category == UTF8PROC_CATEGORY_MN || category == UTF8PROC_CATEGORY_ME || category == UTF8PROC_CATEGORY_CF ||
         category == UTF8PROC_CATEGORY_LM || category == UTF8PROC_CATEGORY_SK;
}

// Py_UNICODE_ISSPACE beyond ASCII
bool is_wide_space(std::int32_t c) {
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// The value of a Unicode decimal digit (category Nd), -1 for anything else. Unicode places every Nd digit in a run
// of ten, 0 to 9 in order, and runs that touch (the mathematical digits) are each ten long.
int decimal_value(std::int32_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c < 128 || utf8proc_category(c) != UTF8PROC_CATEGORY_ND) return -1;
  std::int32_t first = c;
  while (first > 0 && utf8proc_category(first - 1) == UTF8PROC_CATEGORY_ND) --first;
  return static_cast<int>((c - first) % 10);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool equal_ignoring_case(const std::string& text, std::size_t at, const char* word) {
  for (std::size_t i = 0; word[i] != '\0'; ++i, ++at) {
    if (at >= text.size() || (text[at] | 0x20) != word[i]) return false;
  }
  return true;
}

// strtod in the "C" locale, whatever the host app's LC_NUMERIC
double c_strtod(const std::string& ascii) {
  static const locale_t c_locale = newlocale(LC_ALL_MASK, "C", locale_t{});
  return strtod_l(ascii.c_str(), nullptr, c_locale);
}

}  // namespace

std::string repr(const std::string& text) {
  const Points points = decode(text);
  bool single = false, dbl = false;
  for (std::int32_t c : points) {
    single = single || c == '\'';
    dbl = dbl || c == '"';
  }
  const char quote = single && !dbl ? '"' : '\'';
  std::string out(1, quote);
  for (std::int32_t c : points) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < ' ' || c == 0x7F) {
      out += "\\x" + hex(c, 2);
    } else if (c < 0x7F || printable(c)) {
      append(out, c);
    } else if (c <= 0xFF) {
      out += "\\x" + hex(c, 2);
    } else if (c <= 0xFFFF) {
      out += "\\u" + hex(c, 4);
    } else {
      out += "\\U" + hex(c, 8);
    }
  }
  return out + quote;
}

std::string shown(const std::string& text) {
  const std::string quoted = repr(text);
  Points points = decode(quoted);
  if (points.size() <= 80) return quoted;
  points.resize(77);
  return encode(points) + "...";
}

std::string float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  const auto done = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  const std::string scientific(buffer, done.ptr);  // [-]d[.ddd]e±XX, the shortest digits that read back
  const std::size_t e = scientific.find('e');
  const bool negative = scientific[0] == '-';
  std::string digits;
  for (std::size_t i = negative ? 1 : 0; i < e; ++i) {
    if (scientific[i] != '.') digits += scientific[i];
  }
  const int exponent = std::stoi(scientific.substr(e + 1));
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {  // Python's repr: exponent form outside 1e-4 <= |x| < 1e16
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int magnitude = std::abs(exponent);
    out += std::string(exponent < 0 ? "e-" : "e+") + (magnitude < 10 ? "0" : "") + std::to_string(magnitude);
  } else if (exponent < 0) {
    out += "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
  } else {
    const auto whole = static_cast<std::size_t>(exponent) + 1;
    if (digits.size() <= whole) {
      out += digits + std::string(whole - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, whole) + "." + digits.substr(whole);
    }
  }
  return out;
}

std::string format_g(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  const auto done = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::general, 6);
  return std::string(buffer, done.ptr);
}

std::string lower(const std::string& text) {
  const Points points = decode(text);
  Points out;
  for (std::size_t i = 0; i < points.size(); ++i) {
    const std::int32_t c = points[i];
    if (c == 0x130) {  // the one unconditional lower case of two characters (SpecialCasing.txt)
      out.push_back('i');
      out.push_back(0x307);
    } else if (c == 0x3A3) {  // capital sigma: final (U+03C2) after a cased letter and not before one
      std::size_t j = i;
      while (j > 0 && case_ignorable(points[j - 1])) --j;
      bool final_sigma = j > 0 && cased(points[j - 1]);
      if (final_sigma) {
        std::size_t k = i + 1;
        while (k < points.size() && case_ignorable(points[k])) ++k;
        final_sigma = k == points.size() || !cased(points[k]);
      }
      out.push_back(final_sigma ? 0x3C2 : 0x3C3);
    } else {
      out.push_back(is_surrogate(c) ? c : utf8proc_tolower(c));
    }
  }
  return encode(out);
}

std::optional<double> parse_float(const std::string& text) {
  // ASCII kept; Unicode spaces and digits to ASCII ones; any other character makes it no number
  std::string ascii;
  for (std::int32_t c : decode(text)) {
    if (c < 127) {
      ascii += static_cast<char>(c);
    } else if (is_wide_space(c)) {
      ascii += ' ';
    } else if (const int digit = decimal_value(c); digit >= 0) {
      ascii += static_cast<char>('0' + digit);
    } else {
      return std::nullopt;
    }
  }
  // underscores only between digits, then dropped
  std::string plain;
  char previous = '\0';
  for (char c : ascii) {
    if (c == '_') {
      if (!is_digit(previous)) return std::nullopt;
    } else {
      if (previous == '_' && !is_digit(c)) return std::nullopt;
      plain += c;
    }
    previous = c;
  }
  if (previous == '_') return std::nullopt;
  const std::size_t first = plain.find_first_not_of(" \t\n\v\f\r");
  if (first == std::string::npos) return std::nullopt;
  const std::string s = plain.substr(first, plain.find_last_not_of(" \t\n\v\f\r") - first + 1);
  // [sign] (inf | infinity | nan | digits [. digits] [e [sign] digits]), at least one mantissa digit
  std::size_t at = 0;
  const bool negative = s[at] == '-';
  if (s[at] == '+' || s[at] == '-') ++at;
  for (const char* word : {"infinity", "inf", "nan"}) {
    if (equal_ignoring_case(s, at, word) && at + std::char_traits<char>::length(word) == s.size()) {
      const double special = word[0] == 'n' ? std::numeric_limits<double>::quiet_NaN() : HUGE_VAL;
      return negative ? -special : special;
    }
  }
  std::size_t digits = 0;
  for (; at < s.size() && is_digit(s[at]); ++at) ++digits;
  if (at < s.size() && s[at] == '.') {
    for (++at; at < s.size() && is_digit(s[at]); ++at) ++digits;
  }
  if (digits == 0) return std::nullopt;
  if (at < s.size() && (s[at] == 'e' || s[at] == 'E')) {
    ++at;
    if (at < s.size() && (s[at] == '+' || s[at] == '-')) ++at;
    std::size_t exponent_digits = 0;
    for (; at < s.size() && is_digit(s[at]); ++at) ++exponent_digits;
    if (exponent_digits == 0) return std::nullopt;
  }
  if (at != s.size()) return std::nullopt;
  return c_strtod(s);  // overflow: +-inf, underflow: 0 or a subnormal, as Python's float()
}

}  // namespace atrt::python
