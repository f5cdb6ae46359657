// How the Python runtime reads and writes text in its one-line messages, for the C++ messages to be the same text:
// repr() of a str, runtime/errors.py `shown`, repr() and format(x, "g") of a float, str.lower() and float(str).
//
// Place in the data flow: option parsers whose messages quote what a user typed (regions.cpp's --layout; the
// strength and mix messages) call these instead of inventing their own quoting. Text is UTF-8; bytes that are not
// (a C caller may pass any) are read as Python reads a command line's undecodable bytes (surrogateescape: one
// U+DC80..U+DCFF per byte, which repr shows as '\udcXX' and lower() keeps).
//
// Written here: the C++ standard library has none of Python's text rules. Character classes come from utf8proc
// (Unicode's tables, the version Debian ships, which may trail Python's by a version); std::to_chars gives the
// shortest round-trip digits and %g, locale-free.
#pragma once

#include <optional>
#include <string>

namespace atrt::python {

// repr(text): quoted with ' (or " when text holds ' and no "), \\ \t \n \r and the quote escaped, characters
// str.isprintable() refuses as \xNN, \uNNNN or \UNNNNNNNN.
std::string repr(const std::string& text);
// runtime/errors.py shown(text): repr(text), cut to 80 characters (77 and "...").
std::string shown(const std::string& text);
// repr(value) of a float: the shortest digits that read back, '2.0', '1e-05', '1e+16', 'nan', 'inf'.
std::string float_repr(double value);
// format(value, "g"), i.e. f"{value:g}": 6 significant digits, trailing zeros dropped; 'nan', 'inf', '-inf'.
std::string format_g(double value);
// text.lower(): Unicode lower case, U+0130 to "i\u0307" and a final capital sigma to U+03C2 as Python does.
std::string lower(const std::string& text);
// float(text): surrounding whitespace, a sign, digits (any Unicode decimal digit) with single underscores between
// them, a point, an exponent; "inf", "infinity", "nan" in any case. nullopt where Python raises ValueError.
std::optional<double> parse_float(const std::string& text);

}  // namespace atrt::python
