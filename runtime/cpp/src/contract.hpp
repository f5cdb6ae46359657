// GENERATED from runtime/contract.py, which owns every value here, by `python -m runtime.cpp.tools.contract_header`:
// do not edit; after changing the contract, run that command (tests/test_cpp.py fails until this file is its output).
//
// The engine contract and the constants of the method for the library: the audio window, the text length, the
// latents, the UNet's batches, the token slots, and each engine's inputs and outputs (name, dtype, and shape in
// numbers and the symbols of a bundle's sizes; Manifest::contracts puts a bundle's sizes in).
#pragma once

#include <cstddef>
#include <cstdint>

namespace atrt {

constexpr int kSampleRate = 16000;
constexpr int kClipSeconds = 10;
constexpr std::int64_t kNSamples = 160000;
constexpr int kTextLength = 77;
constexpr int kTokenSlots = 4;
constexpr int kLatentChannels = 4;
constexpr int kVaeFactor = 8;
constexpr int kSingleBatch = 1;
constexpr int kGuidedBatch = 2;
constexpr std::int64_t kDynamic = -1;
constexpr const char* kPlaceholder = "<*>";
constexpr const char* kSlotPlaceholders[] = {"<*>", "<2>", "<3>", "<4>"};  // in slot order

// The sizes of a bundle that the shapes name by a symbol:
//   D  the token width (CLIP's hidden size)
//   S  the token slots of the text engine
//   N  the UNet's batch (DYNAMIC when the bundle holds both)
//   h  the latent height (the picture's over VAE_FACTOR)
//   w  the latent width (the picture's over VAE_FACTOR)
//   H  the picture's height
//   W  the picture's width
enum class SizeSymbol { none, D, S, N, h, w, H, W };
// the axis a bundle of one token slot leaves out (its text engine takes audio_token [1, D])
constexpr SizeSymbol kSlotsSymbol = SizeSymbol::S;

// One dimension of a shape: a number, or a bundle's size by its symbol (implicit, so a shape reads {1, 77, D}).
struct ContractDim {
  SizeSymbol symbol = SizeSymbol::none;  // none: the dimension is `number`
  std::int64_t number = 0;
  constexpr ContractDim() = default;
  constexpr ContractDim(std::int64_t size) : number(size) {}
  constexpr ContractDim(SizeSymbol size) : symbol(size) {}
};

struct ContractTensor {
  const char* name;
  const char* dtype;  // numpy's name: float32, int64
  std::size_t rank;
  ContractDim shape[4];
};

struct EngineContract {
  const char* name;
  const ContractTensor* const* inputs;
  std::size_t input_count;
  const ContractTensor* const* outputs;
  std::size_t output_count;
};

namespace audio_encoder {
constexpr const char* kName = "audio_encoder";
constexpr ContractTensor kWaveform{"waveform", "float32", 2, {1, 160000}};
constexpr ContractTensor kAudioToken{"audio_token", "float32", 2, {1, SizeSymbol::D}};
constexpr const ContractTensor* kInputs[] = {&kWaveform};
constexpr const ContractTensor* kOutputs[] = {&kAudioToken};
}  // namespace audio_encoder

namespace text_encoder {
constexpr const char* kName = "text_encoder";
constexpr ContractTensor kInputIds{"input_ids", "int64", 2, {1, 77}};
constexpr ContractTensor kAudioToken{"audio_token", "float32", 3, {1, SizeSymbol::S, SizeSymbol::D}};
constexpr ContractTensor kTextEmbeddings{"text_embeddings", "float32", 3, {1, 77, SizeSymbol::D}};
constexpr const ContractTensor* kInputs[] = {&kInputIds, &kAudioToken};
constexpr const ContractTensor* kOutputs[] = {&kTextEmbeddings};
}  // namespace text_encoder

namespace unet {
constexpr const char* kName = "unet";
constexpr ContractTensor kSample{"sample", "float32", 4, {SizeSymbol::N, 4, SizeSymbol::h, SizeSymbol::w}};
constexpr ContractTensor kTimestep{"timestep", "float32", 1, {1}};
constexpr ContractTensor kEncoderHiddenStates{
    "encoder_hidden_states", "float32", 3, {SizeSymbol::N, 77, SizeSymbol::D}};
constexpr ContractTensor kNoisePred{"noise_pred", "float32", 4, {SizeSymbol::N, 4, SizeSymbol::h, SizeSymbol::w}};
constexpr const ContractTensor* kInputs[] = {&kSample, &kTimestep, &kEncoderHiddenStates};
constexpr const ContractTensor* kOutputs[] = {&kNoisePred};
}  // namespace unet

namespace vae_decoder {
constexpr const char* kName = "vae_decoder";
constexpr ContractTensor kLatent{"latent", "float32", 4, {1, 4, SizeSymbol::h, SizeSymbol::w}};
constexpr ContractTensor kImage{"image", "float32", 4, {1, 3, SizeSymbol::H, SizeSymbol::W}};
constexpr const ContractTensor* kInputs[] = {&kLatent};
constexpr const ContractTensor* kOutputs[] = {&kImage};
}  // namespace vae_decoder

namespace vae_encoder {
constexpr const char* kName = "vae_encoder";
constexpr ContractTensor kImage{"image", "float32", 4, {1, 3, SizeSymbol::H, SizeSymbol::W}};
constexpr ContractTensor kLatent{"latent", "float32", 4, {1, 4, SizeSymbol::h, SizeSymbol::w}};
constexpr const ContractTensor* kInputs[] = {&kImage};
constexpr const ContractTensor* kOutputs[] = {&kLatent};
}  // namespace vae_encoder

// The engines, in data order (runtime/contract.py ENGINE_NAMES)
constexpr EngineContract kEngineContracts[] = {
    {audio_encoder::kName, audio_encoder::kInputs, 1, audio_encoder::kOutputs, 1},
    {text_encoder::kName, text_encoder::kInputs, 2, text_encoder::kOutputs, 1},
    {unet::kName, unet::kInputs, 3, unet::kOutputs, 1},
    {vae_decoder::kName, vae_decoder::kInputs, 1, vae_decoder::kOutputs, 1},
    {vae_encoder::kName, vae_encoder::kInputs, 1, vae_encoder::kOutputs, 1},
};

}  // namespace atrt
