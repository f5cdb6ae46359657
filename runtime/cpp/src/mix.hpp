// A mix of sounds (generate --mix dog.wav:0.7,rain.wav:0.3): its weights, and its token, the weighted mean of the
// sounds' tokens, as runtime/pipeline.py's mix_weights and Pipeline.listen.
//
// Place in the data flow: each sound -> waveform -> audio_encoder -> token [D]; mix_tokens(mix_weights(weights),
// tokens) -> the one token [D] spliced into the prompt. A single sound is the mix of one, its token unchanged.
#pragma once

#include <vector>

namespace atrt {

// The weights normalised to sum 1 (numpy's sum, so the same doubles as Python's); a single weight may be negative
// (a sound taken away). CONFIG error, runtime/pipeline.py's text naming the weights, for none, a non-finite one, or
// a sum that is not positive.
std::vector<double> mix_weights(const std::vector<double>& weights);
// sum_k float(weights[k]) * tokens[k], in float32 in the sounds' order (Python's np.tensordot leaves the order to
// its BLAS: equal for one sound, within float32 rounding otherwise). Every token has the first's length.
std::vector<float> mix_tokens(const std::vector<double>& weights, const std::vector<std::vector<float>>& tokens);

}  // namespace atrt
