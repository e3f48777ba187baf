#include <dydnn/errors.h>
#include <dydnn/nn/detail/grouped_weight.h>

#include <torch/torch.h>

#include <cmath>

namespace dydnn {
namespace nn {
namespace detail {

void GroupedLayout::validate(const std::string& who) const {
  const int64_t g = connectivity.num_groups();
  DYDNN_CHECK_VALUE(g >= 1, "nn", "{}: the connectivity has no groups", who);
  DYDNN_CHECK_VALUE(!dense_input || in_groups.num_groups() == 1, "nn",
                    "{}: a dense input is one group of all channels (got in_groups {})", who, in_groups.to_string());
  DYDNN_CHECK_VALUE(!dense_output || out_groups.num_groups() == 1, "nn",
                    "{}: a dense output is one group of all channels (got out_groups {})", who, out_groups.to_string());
  DYDNN_CHECK_VALUE(dense_input || in_groups.num_groups() == g, "nn",
                    "{}: in_groups {} has {} groups but the connectivity '{}' has {} (they must match)", who,
                    in_groups.to_string(), in_groups.num_groups(), connectivity.name(), g);
  DYDNN_CHECK_VALUE(dense_output || out_groups.num_groups() == g, "nn",
                    "{}: out_groups {} has {} groups but the connectivity '{}' has {} (they must match)", who,
                    out_groups.to_string(), out_groups.num_groups(), connectivity.name(), g);
}

bool GroupedLayout::allowed(int64_t j, int64_t i) const {
  return dense_input || dense_output || connectivity.reads(j, i);
}

Config GroupedLayout::inputs_of(int64_t j, Config config) const {
  if (dense_input) return Config(1);
  if (dense_output) return config;
  return config & connectivity.inputs_of(j);
}

ChannelRange channel_range(const GroupSpec& spec, Config config) {
  ChannelRange range;
  int64_t expected = -1;
  range.contiguous = true;
  for (int64_t g = 0; g < spec.num_groups(); ++g) {
    if (!config.contains(g)) continue;
    if (expected < 0) {
      range.start = spec.offset(g);
    } else if (spec.offset(g) != expected) {
      range.contiguous = false;
    }
    expected = spec.offset(g) + spec.size(g);
    range.length += spec.size(g);
  }
  return range;
}

std::vector<int64_t> channel_indices(const GroupSpec& spec, Config config) {
  std::vector<int64_t> out;
  for (int64_t g = 0; g < spec.num_groups(); ++g)
    if (config.contains(g))
      for (int64_t c = 0; c < spec.size(g); ++c) out.push_back(spec.offset(g) + c);
  return out;
}

namespace {

torch::Tensor select_channels(const torch::Tensor& t, int64_t dim, const GroupSpec& spec, Config config) {
  ChannelRange range = channel_range(spec, config);
  if (range.contiguous) return t.narrow(dim, range.start, range.length);
  auto index = torch::tensor(channel_indices(spec, config), torch::TensorOptions().dtype(torch::kLong).device(t.device()));
  return t.index_select(dim, index);
}

}  // namespace

GroupedWeight::GroupedWeight(torch::nn::Module& owner, GroupedLayout layout, std::vector<int64_t> kernel, bool bias,
                             bool bias_per_input_group)
    : layout_(std::move(layout)), kernel_(std::move(kernel)), bias_per_input_group_(bias_per_input_group) {
  const auto& in = layout_.in_groups;
  const auto& out = layout_.out_groups;
  int64_t kernel_volume = 1;
  for (auto k : kernel_) kernel_volume *= k;
  std::vector<int64_t> shape{out.channels(), in.channels()};
  shape.insert(shape.end(), kernel_.begin(), kernel_.end());
  torch::NoGradGuard no_grad;
  storage_ = torch::zeros(shape);
  if (bias) {
    bias_storage_ = bias_per_input_group_ ? torch::zeros({in.num_groups(), out.channels()}) : torch::zeros({out.channels()});
  }
  for (int64_t j = 0; j < out.num_groups(); ++j) {
    int64_t fan_in = 0;
    for (int64_t i = 0; i < in.num_groups(); ++i)
      if (layout_.allowed(j, i)) fan_in += in.size(i) * kernel_volume;
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    for (int64_t i = 0; i < in.num_groups(); ++i) {
      if (!layout_.allowed(j, i)) continue;
      auto block = storage_.narrow(0, out.offset(j), out.size(j)).narrow(1, in.offset(i), in.size(i));
      block.uniform_(-bound, bound);
      block.set_requires_grad(true);
      blocks_.push_back(owner.register_parameter(fmt::format("weight_{}_{}", j, i), block));
      block_ids_.emplace_back(j, i);
    }
    if (bias && !bias_per_input_group_) {
      auto b = bias_storage_.narrow(0, out.offset(j), out.size(j));
      b.uniform_(-bound, bound);
      b.set_requires_grad(true);
      biases_.push_back(owner.register_parameter(fmt::format("bias_{}", j), b));
    }
  }
  if (bias && bias_per_input_group_) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in.channels() * kernel_volume));
    for (int64_t i = 0; i < in.num_groups(); ++i) {
      auto b = bias_storage_[i];
      b.uniform_(-bound, bound);
      b.set_requires_grad(true);
      biases_.push_back(owner.register_parameter(fmt::format("bias_in{}", i), b));
    }
  }
  for (const auto& t : blocks_) expected_ptrs_.push_back(t.data_ptr());
  for (const auto& t : biases_) expected_ptrs_.push_back(t.data_ptr());
}

void GroupedWeight::sync() {
  size_t k = 0;
  bool moved = false;
  for (const auto& t : blocks_) moved |= t.data_ptr() != expected_ptrs_[k++];
  for (const auto& t : biases_) moved |= t.data_ptr() != expected_ptrs_[k++];
  if (moved) relayout();
}

void GroupedWeight::relayout() {
  torch::NoGradGuard no_grad;
  const auto& in = layout_.in_groups;
  const auto& out = layout_.out_groups;
  storage_ = torch::zeros(storage_.sizes(), blocks_.front().options().requires_grad(false));
  for (size_t b = 0; b < blocks_.size(); ++b) {
    auto [j, i] = block_ids_[b];
    auto view = storage_.narrow(0, out.offset(j), out.size(j)).narrow(1, in.offset(i), in.size(i));
    view.copy_(blocks_[b]);
    blocks_[b].set_data(view);
  }
  if (bias_storage_.defined()) {
    bias_storage_ = torch::zeros(bias_storage_.sizes(), biases_.front().options().requires_grad(false));
    for (size_t b = 0; b < biases_.size(); ++b) {
      auto view = bias_per_input_group_ ? bias_storage_[static_cast<int64_t>(b)]
                                        : bias_storage_.narrow(0, out.offset(static_cast<int64_t>(b)),
                                                               out.size(static_cast<int64_t>(b)));
      view.copy_(biases_[b]);
      biases_[b].set_data(view);
    }
  }
  expected_ptrs_.clear();
  for (const auto& t : blocks_) expected_ptrs_.push_back(t.data_ptr());
  for (const auto& t : biases_) expected_ptrs_.push_back(t.data_ptr());
  invalidate();
}

int64_t GroupedWeight::resident_bytes() const {
  auto bytes = [](const torch::Tensor& t) { return t.defined() ? static_cast<int64_t>(t.numel() * t.element_size()) : 0; };
  int64_t parts = 0;
  for (const auto& entry : part_cache_)
    parts += bytes(entry.tensors.weight) + bytes(entry.tensors.bias) +
             (entry.tensors.prepared ? entry.tensors.prepared->bytes() : 0);
  return bytes(storage_) + bytes(bias_storage_) + bytes(cache_.first) + bytes(cache_.second) + parts;
}

bool GroupedWeight::requires_grad() const {
  for (const auto& t : blocks_)
    if (t.requires_grad()) return true;
  for (const auto& t : biases_)
    if (t.requires_grad()) return true;
  return false;
}

uint64_t GroupedWeight::version_sum() const {
  uint64_t sum = 0;
  for (const auto& t : blocks_) sum += detail::version_of(t);
  for (const auto& t : biases_) sum += detail::version_of(t);
  return sum;
}

std::vector<torch::Tensor> GroupedWeight::parameters_of(Config config, Config rows) const {
  const Config active_out = rows.empty() ? layout_.active_out(config) : (layout_.active_out(config) & rows);
  std::vector<torch::Tensor> out;
  for (size_t k = 0; k < blocks_.size(); ++k) {
    const auto [j, i] = block_ids_[k];
    if (active_out.contains(j) && layout_.active_in(config).contains(i)) out.push_back(blocks_[k]);
  }
  if (bias_per_input_group_) {
    for (size_t i = 0; i < biases_.size(); ++i)
      if (layout_.active_in(config).contains(static_cast<int64_t>(i))) out.push_back(biases_[i]);
  } else {
    for (size_t j = 0; j < biases_.size(); ++j)
      if (active_out.contains(static_cast<int64_t>(j))) out.push_back(biases_[j]);
  }
  return out;
}

std::pair<torch::Tensor, torch::Tensor> GroupedWeight::packed_for_training(Config config, Config rows) const {
  const auto& in = layout_.in_groups;
  const auto& out = layout_.out_groups;
  const Config active_in = layout_.active_in(config);
  const Config active_out = rows.empty() ? layout_.active_out(config) : (layout_.active_out(config) & rows);
  std::vector<torch::Tensor> packed_rows;
  std::vector<torch::Tensor> out_biases;
  size_t b = 0;
  for (int64_t j = 0; j < out.num_groups(); ++j) {
    std::vector<torch::Tensor> row;
    for (int64_t i = 0; i < in.num_groups(); ++i) {
      const bool exists = layout_.allowed(j, i);
      const size_t index = b;
      if (exists) ++b;
      if (!active_out.contains(j) || !active_in.contains(i)) continue;
      if (exists) {
        row.push_back(blocks_[index]);
      } else {
        std::vector<int64_t> shape{out.size(j), in.size(i)};
        shape.insert(shape.end(), kernel_.begin(), kernel_.end());
        row.push_back(torch::zeros(shape, blocks_.front().options().requires_grad(false)));
      }
    }
    if (!active_out.contains(j)) continue;
    packed_rows.push_back(row.size() == 1 ? row.front() : torch::cat(row, 1));
    if (!biases_.empty() && !bias_per_input_group_) out_biases.push_back(biases_[j]);
  }
  torch::Tensor weight = packed_rows.size() == 1 ? packed_rows.front() : torch::cat(packed_rows, 0);
  torch::Tensor bias;
  if (bias_per_input_group_ && !biases_.empty()) {
    for (int64_t i = 0; i < in.num_groups(); ++i)
      if (active_in.contains(i)) bias = bias.defined() ? bias + biases_[i] : biases_[i];
  } else if (!out_biases.empty()) {
    bias = out_biases.size() == 1 ? out_biases.front() : torch::cat(out_biases, 0);
  }
  return {weight, bias};
}

std::pair<torch::Tensor, torch::Tensor> GroupedWeight::packed_for_inference(Config config) {
  sync();
  if (config == view_config_) return views_;
  const Config active_in = layout_.active_in(config);
  const Config active_out = layout_.active_out(config);
  const ChannelRange in_range = channel_range(layout_.in_groups, active_in);
  const ChannelRange out_range = channel_range(layout_.out_groups, active_out);
  const bool bias_sum = bias_per_input_group_ && bias_storage_.defined();
  const bool weight_view = in_range.contiguous && out_range.contiguous;
  torch::Tensor weight, bias;
  if (weight_view)
    weight = storage_.narrow(0, out_range.start, out_range.length).narrow(1, in_range.start, in_range.length);
  if (bias_storage_.defined() && !bias_sum && out_range.contiguous)
    bias = bias_storage_.narrow(0, out_range.start, out_range.length);
  if (weight_view && (bias.defined() || !bias_storage_.defined())) {
    view_config_ = config;
    views_ = {weight, bias};
    return views_;
  }
  // Something must be computed (a gathered weight, a gathered or summed bias): cache it
  // for the current config only, revalidated by the parameters' versions.
  const uint64_t version = version_sum();
  if (cache_config_ != config || cache_version_ != version) {
    torch::NoGradGuard no_grad;
    cache_ = {};
    if (!weight_view)
      cache_.first = select_channels(select_channels(storage_, 0, layout_.out_groups, active_out), 1, layout_.in_groups,
                                     active_in)
                         .contiguous();
    if (bias_sum) {
      // One row per input group: select groups, not channels.
      const auto rows = GroupSpec::equal(layout_.in_groups.num_groups(), layout_.in_groups.num_groups());
      cache_.second = select_channels(bias_storage_, 0, rows, active_in).sum(0);
    } else if (bias_storage_.defined() && !bias.defined()) {
      cache_.second = select_channels(bias_storage_, 0, layout_.out_groups, active_out);
    }
    cache_config_ = config;
    cache_version_ = version;
  }
  return {weight_view ? weight : cache_.first, bias.defined() ? bias : cache_.second};
}

std::pair<torch::Tensor, torch::Tensor> GroupedWeight::group_for_inference(int64_t j, Config config) {
  sync();
  const auto& out = layout_.out_groups;
  auto rows = storage_.narrow(0, out.offset(j), out.size(j));
  auto weight = select_channels(rows, 1, layout_.in_groups, layout_.inputs_of(j, config));
  torch::Tensor bias;
  if (bias_storage_.defined() && !bias_per_input_group_) bias = bias_storage_.narrow(0, out.offset(j), out.size(j));
  return {weight, bias};
}

InferencePart GroupedWeight::part_for_inference(Config config, Config part, bool columns, const ChannelAffine* fold,
                                                const WeightPreparer& prepare) {
  sync();
  // Cached per (config, part): a refinement alternates between configs, which would make
  // the single-config cache of `packed_for_inference` rebuild every call.
  const uint64_t version = version_sum();
  const uint64_t fold_version = fold ? fold->version : 0;
  for (const auto& entry : part_cache_)
    if (entry.config == config && entry.part == part && entry.columns == columns && entry.version == version &&
        entry.folded == (fold != nullptr) && entry.fold_version == fold_version)
      return entry.tensors;
  torch::NoGradGuard no_grad;
  InferencePart out;
  if (columns) {
    // The input groups `part` of a dense-output layer (the additive head's new groups):
    // their weight columns and their own biases, summed.
    out.weight = select_channels(storage_, 1, layout_.in_groups, part).contiguous();
    if (bias_storage_.defined() && bias_per_input_group_) {
      const auto rows = GroupSpec::equal(layout_.in_groups.num_groups(), layout_.in_groups.num_groups());
      out.bias = select_channels(bias_storage_, 0, rows, part).sum(0);
    }
  } else {
    // The storage holds zeros where the mask forbids a block, so the rows over all active
    // inputs compute exactly what those rows of the packed weight compute.
    const Config active_in = layout_.active_in(config);
    const Config active_out = layout_.dense_output ? layout_.active_out(config) : layout_.active_out(config) & part;
    out.weight = select_channels(select_channels(storage_, 0, layout_.out_groups, active_out), 1, layout_.in_groups,
                                 active_in)
                     .contiguous();
    if (bias_storage_.defined() && !bias_per_input_group_)
      out.bias = select_channels(bias_storage_, 0, layout_.out_groups, active_out).contiguous();
  }
  if (fold) {
    // y = (W x + b) * s + t = (s W) x + (s b + t): one call instead of the layer and a BN.
    std::vector<int64_t> shape(static_cast<size_t>(out.weight.dim()), 1);
    shape[0] = -1;
    out.weight = out.weight * fold->scale.view(shape);
    out.bias = out.bias.defined() ? out.bias * fold->scale + fold->shift : fold->shift.clone();
  }
  if (prepare) out.prepared = prepare(out.weight, out.bias);
  if (part_cache_.size() >= kPartCacheSize) part_cache_.erase(part_cache_.begin());
  part_cache_.push_back({config, part, columns, fold != nullptr, version, fold_version, out});
  return out;
}

InferencePart GroupedWeight::rows_for_inference(Config config, Config rows, const ChannelAffine* fold,
                                                const WeightPreparer& prepare) {
  return part_for_inference(config, rows, false, fold, prepare);
}

InferencePart GroupedWeight::columns_for_inference(Config config, Config columns) {
  DYDNN_CHECK_VALUE(layout_.dense_output, "nn", "columns_for_inference: only for a dense-output layer (a head)");
  return part_for_inference(config, columns, true, nullptr, {});
}

}  // namespace detail
}  // namespace nn
}  // namespace dydnn
