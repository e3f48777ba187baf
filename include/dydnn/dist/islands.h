#pragma once
/// \file
/// How a model's groups are split over two devices for a serving mode, and what each
/// device sends to and receives from the other for one request.

#include <dydnn/dist/options.h>
#include <dydnn/nn/config.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dydnn {
namespace nn {
class DynamicNetImpl;
}
namespace dist {

/// What flows between the two parts while both work on one request.
enum class Flow {
  Late,      ///< part 0 sends its final features once (fluid without cross edges)
  Cross,     ///< part 0 streams every layer's output to part 1 (fluid cross edges; the Dynamic baseline)
  Exchange,  ///< both send every layer's output to each other (the channel-split Static baseline)
};

/// "late", "cross" or "exchange".
std::string to_string(Flow flow);

/// The split of a model for a mode: part 0 (groups A,B) on device rank 1, part 1
/// (C*,D*) on rank 2. Part 1 combines: it runs the head and answers.
struct Split {
  Mode mode = Mode::HighThroughput;
  /// The groups each part holds.
  std::vector<nn::Config> parts;
  /// Each part's config when it serves alone; an empty config when it cannot
  /// (the Dynamic baseline's C,D; both parts of the Static baseline).
  std::vector<nn::Config> standalone;
  /// The config both parts compute together.
  nn::Config combined;
  Flow flow = Flow::Late;
  /// The model's layer count.
  int64_t num_blocks = 0;

  /// Whether part `p` sends its output of layer `k` to the other part.
  bool sends(int64_t p, int64_t k) const;
  /// Whether part `p` needs the other part's output of layer `k`.
  bool receives(int64_t p, int64_t k) const { return sends(1 - p, k); }
  /// Whether part `p` reads the other part's outputs inside the layers (so it runs every
  /// layer at `combined`); otherwise it runs at its own part until the head.
  bool reads_inside(int64_t p) const;
};

/// The split of `net` for `mode`. `ht` and `ha` need a fluid model with two islands
/// (late fusion when it has no cross edges, cross fusion when it has); `dynamic` a model
/// whose first half of the groups reads nothing of the second half and is a valid config
/// (incremental); `static` any model (its halves of the full config). Throws `ValueError`
/// naming the model, the mode and what the mode needs.
Split split_for(const nn::DynamicNetImpl& net, Mode mode);

}  // namespace dist
}  // namespace dydnn
