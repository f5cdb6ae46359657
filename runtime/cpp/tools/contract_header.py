"""Writes runtime/cpp/src/contract.hpp, the C++ library's copy of runtime/contract.py, from runtime/contract.py.

runtime/contract.py owns the engine contract and the constants of the method; the C++ library reads them from the
header this writes (the constants, the engines' names, and each engine's inputs and outputs with their dtypes and
shapes in numbers and the symbols of a bundle's sizes), never from numbers of its own. The header is checked in, so
a build needs no Python; tests/test_cpp.py fails while it differs from what this writes. After changing the
contract, run from the repository root (``-m`` from there imports this checkout's runtime/):

    python -m runtime.cpp.tools.contract_header
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from runtime import contract

HEADER = Path(__file__).resolve().parents[1] / "src" / "contract.hpp"
COMMAND = "python -m runtime.cpp.tools.contract_header"
# runtime.contract's integers the library uses, and their C++ types (the types the library's arithmetic expects)
INTEGERS = {
    "SAMPLE_RATE": "int",
    "CLIP_SECONDS": "int",
    "N_SAMPLES": "std::int64_t",
    "TEXT_LENGTH": "int",
    "TOKEN_SLOTS": "int",
    "LATENT_CHANNELS": "int",
    "VAE_FACTOR": "int",
    "SINGLE_BATCH": "int",
    "GUIDED_BATCH": "int",
    "DYNAMIC": "std::int64_t",
}
NUMBER = "none"  # the SizeSymbol of a dimension that is a number


def cpp_name(python_name: str) -> str:
    """A Python name in C++ constant style: N_SAMPLES -> kNSamples, encoder_hidden_states -> kEncoderHiddenStates."""
    return "k" + "".join(part.capitalize() for part in python_name.lower().split("_"))


def cpp_string(text: str) -> str:
    """``text`` as a C++ string literal; the contract's strings are printable ASCII without quotes or backslashes."""
    if not re.fullmatch(r"[ -~]*", text) or '"' in text or "\\" in text:
        raise ValueError(f"{text!r} is not a plain string this header can carry")
    return f'"{text}"'


def dims(shape: tuple[int | str, ...]) -> str:
    """A shape as ContractDim initialisers: numbers as they are, symbols as SizeSymbol::D."""
    return ", ".join(f"SizeSymbol::{d}" if isinstance(d, str) else str(d) for d in shape)


def render() -> str:
    """The text of contract.hpp for the contract as it is now."""
    max_rank = max(len(s.shape) for inputs, outputs in contract.CONTRACT.values() for s in (*inputs, *outputs))
    lines = [
        f"// GENERATED from runtime/contract.py, which owns every value here, by `{COMMAND}`:",
        "// do not edit; after changing the contract, run that command (tests/test_cpp.py fails until this file is "
        "its output).",
        "//",
        "// The engine contract and the constants of the method for the library: the audio window, the text "
        "length, the",
        "// latents, the UNet's batches, the token slots, and each engine's inputs and outputs (name, dtype, and "
        "shape in",
        "// numbers and the symbols of a bundle's sizes; Manifest::contracts puts a bundle's sizes in).",
        "#pragma once",
        "",
        "#include <cstddef>",
        "#include <cstdint>",
        "",
        "namespace atrt {",
        "",
    ]
    lines += [f"constexpr {kind} {cpp_name(name)} = {getattr(contract, name)};" for name, kind in INTEGERS.items()]
    placeholders = ", ".join(map(cpp_string, contract.SLOT_PLACEHOLDERS))
    lines += [
        f"constexpr const char* kPlaceholder = {cpp_string(contract.PLACEHOLDER)};",
        f"constexpr const char* kSlotPlaceholders[] = {{{placeholders}}};  // in slot order",
        "",
        "// The sizes of a bundle that the shapes name by a symbol:",
        *(f"//   {symbol}  {meaning}" for symbol, meaning in contract.SIZES.items()),
        f"enum class SizeSymbol {{ {NUMBER}, {', '.join(contract.SIZES)} }};",
        "// the axis a bundle of one token slot leaves out (its text engine takes audio_token [1, D])",
        f"constexpr SizeSymbol kSlotsSymbol = SizeSymbol::{contract.SLOTS};",
        "",
        "// One dimension of a shape: a number, or a bundle's size by its symbol (implicit, so a shape reads "
        "{1, 77, D}).",
        "struct ContractDim {",
        f"  SizeSymbol symbol = SizeSymbol::{NUMBER};  // {NUMBER}: the dimension is `number`",
        "  std::int64_t number = 0;",
        "  constexpr ContractDim() = default;",
        "  constexpr ContractDim(std::int64_t size) : number(size) {}",
        "  constexpr ContractDim(SizeSymbol size) : symbol(size) {}",
        "};",
        "",
        "struct ContractTensor {",
        "  const char* name;",
        "  const char* dtype;  // numpy's name: float32, int64",
        "  std::size_t rank;",
        f"  ContractDim shape[{max_rank}];",
        "};",
        "",
        "struct EngineContract {",
        "  const char* name;",
        "  const ContractTensor* const* inputs;",
        "  std::size_t input_count;",
        "  const ContractTensor* const* outputs;",
        "  std::size_t output_count;",
        "};",
    ]
    for engine, (inputs, outputs) in contract.CONTRACT.items():
        lines += ["", f"namespace {engine} {{", f"constexpr const char* kName = {cpp_string(engine)};"]
        for spec in (*inputs, *outputs):
            fields = f"{cpp_string(spec.name)}, {cpp_string(spec.dtype)}, {len(spec.shape)}, {{{dims(spec.shape)}}}"
            line = f"constexpr ContractTensor {cpp_name(spec.name)}{{{fields}}};"
            lines.append(
                line if len(line) <= 120 else f"constexpr ContractTensor {cpp_name(spec.name)}{{\n    {fields}}};"
            )
        for kind, specs in (("kInputs", inputs), ("kOutputs", outputs)):
            pointers = ", ".join("&" + cpp_name(s.name) for s in specs)
            lines.append(f"constexpr const ContractTensor* {kind}[] = {{{pointers}}};")
        lines.append(f"}}  // namespace {engine}")
    lines += [
        "",
        "// The engines, in data order (runtime/contract.py ENGINE_NAMES)",
        "constexpr EngineContract kEngineContracts[] = {",
        *(
            f"    {{{e}::kName, {e}::kInputs, {len(ins)}, {e}::kOutputs, {len(outs)}}},"
            for e, (ins, outs) in ((e, contract.CONTRACT[e]) for e in contract.ENGINE_NAMES)
        ),
        "};",
        "",
        "}  // namespace atrt",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    HEADER.write_text(render())
    print(f"wrote {HEADER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
