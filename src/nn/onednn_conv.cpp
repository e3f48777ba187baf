// Inference convolutions through oneDNN primitives created once and executed directly.
//
// LibTorch 1.13's `mkldnn_convolution` creates the primitive descriptor, reorders and
// allocates on every call: about 25 us at batch 1 whatever the layer's size, where the
// arithmetic of this project's layers takes 2-40 us (docs/kernels.md). Debian's LibTorch
// links the system oneDNN (libdnnl.so.2), so with its headers (`libdnnl-dev`) the same
// kernels run without that overhead. Without the headers this file builds the LibTorch
// fallbacks only.
#include <dydnn/errors.h>
#include <dydnn/nn/kernels.h>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <list>
#include <mutex>
#include <optional>

#if DYDNN_HAVE_ONEDNN
#include <dnnl.hpp>
#endif

namespace dydnn {
namespace nn {

namespace {

/// Shapes that fit together, checked before any kernel sees them (LibTorch's messages
/// differ per path).
void check_shapes(const torch::Tensor& input, at::IntArrayRef weight, const torch::Tensor& bias) {
  DYDNN_CHECK_VALUE(input.dim() == 4, "nn", "conv2d: expected a 4D input [N, C, H, W] (got {}D)", input.dim());
  DYDNN_CHECK_VALUE(weight.size() == 4, "nn", "conv2d: expected a 4D weight [C_out, C_in, kh, kw] (got {}D)",
                    weight.size());
  DYDNN_CHECK_VALUE(input.size(1) == weight[1], "nn", "conv2d: the input has {} channels, the weight expects {}",
                    input.size(1), weight[1]);
  DYDNN_CHECK_VALUE(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight[0]), "nn",
                    "conv2d: bias of shape [{}] for {} output channels", fmt::join(bias.sizes(), ", "),
                    weight[0]);
}

#if DYDNN_HAVE_ONEDNN
bool needs_autograd(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias) {
  return torch::GradMode::is_enabled() &&
         (input.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
}

using dnnl::memory;
using Tag = memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

memory::dims dims_of(at::IntArrayRef sizes) { return memory::dims(sizes.begin(), sizes.end()); }

/// What a convolution primitive is created for: input [n, ic, ih, iw], weight
/// [oc, ic, kh, kw], stride, padding, whether it has a bias.
struct ConvShape {
  std::array<int64_t, 12> v{};

  ConvShape(const torch::Tensor& input, at::IntArrayRef weight, bool bias, at::IntArrayRef stride,
            at::IntArrayRef padding)
      : v{input.size(0), input.size(1), input.size(2), input.size(3), weight[0], weight[2], weight[3],
          stride[0],     stride[1],     padding[0],    padding[1],    bias ? 1 : 0} {}
  bool operator==(const ConvShape& o) const { return v == o.v; }
  int64_t n() const { return v[0]; }
  int64_t ic() const { return v[1]; }
  int64_t oc() const { return v[4]; }
  int64_t out_h() const { return (v[2] + 2 * v[9] - v[5]) / v[7] + 1; }
  int64_t out_w() const { return (v[3] + 2 * v[10] - v[6]) / v[8] + 1; }
  bool has_bias() const { return v[11] != 0; }
};

/// A reorder between two layouts. Its scratchpad, when it needs one, comes from the caller
/// like the convolution's, so that one reorder can run on several threads at once.
struct Reorder {
  dnnl::reorder primitive;
  memory::desc scratch;

  Reorder(const memory::desc& from, const memory::desc& to) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::reorder::primitive_desc pd(cpu_engine(), from, cpu_engine(), to, attr);
    primitive = dnnl::reorder(pd);
    scratch = pd.scratchpad_desc();
  }
  /// Runs on this thread's stream; `scratch_space` holds at least `scratch.get_size()` bytes.
  void execute(const memory& from, const memory& to, char* scratch_space) const {
    std::unordered_map<int, memory> args{{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    if (scratch.get_size() > 0) args.emplace(DNNL_ARG_SCRATCHPAD, memory(scratch, cpu_engine(), scratch_space));
    primitive.execute(thread_stream(), args);
  }
};

/// A convolution primitive with the reorders around it: the source and destination
/// stay NCHW tensors for the caller, the primitive reads and writes its own layouts.
struct ConvPlan {
  uint64_t id = 0;  // unique per plan made: the key of each thread's memory objects for it
  memory::desc plain_src, plain_dst, plain_weights, src, weights, dst, bias, scratch;
  dnnl::convolution_forward conv;
  std::optional<Reorder> src_to_blocked, dst_to_plain, weights_to_blocked;
  std::vector<int64_t> out_shape;
  size_t scratch_bytes = 0;  // the largest scratchpad of the convolution and its reorders
};

ConvPlan make_plan(const ConvShape& s, const memory::desc& given_weights) {
  static std::atomic<uint64_t> next_id{1};
  ConvPlan p;
  p.id = next_id++;
  const memory::dims src_dims{s.n(), s.ic(), s.v[2], s.v[3]}, weight_dims{s.oc(), s.ic(), s.v[5], s.v[6]},
      dst_dims{s.n(), s.oc(), s.out_h(), s.out_w()};
  p.plain_src = memory::desc(src_dims, memory::data_type::f32, Tag::nchw);
  p.plain_dst = memory::desc(dst_dims, memory::data_type::f32, Tag::nchw);
  p.plain_weights = given_weights;
  // With few input channels a blocked source pads them to a block of 8 or 16; oneDNN's
  // direct kernel for a plain source is 2x faster there (1 -> 8 channels at 28x28:
  // 2.4 vs 4.9 us). With many, a plain source sends it to gemm, 4x slower (both measured
  // by benchmarks/experiments/onednn_direct_conv.cpp).
  const bool plain_source = s.ic() < 8;
  const auto any = [](const memory::dims& d) { return memory::desc(d, memory::data_type::f32, Tag::any); };
  const memory::desc bias_md =
      s.has_bias() ? memory::desc({s.oc()}, memory::data_type::f32, Tag::x) : memory::desc();
  // `forward_training` as LibTorch asks for (a convolution keeps no workspace either way):
  // oneDNN 2.6 then picks its blocked jit kernels, where `forward_inference` picked brgconv
  // over channels-last, 10-25% slower at 8 -> 16 and 32 -> 64 channels, batch 1 to 32.
  const auto desc = dnnl::convolution_forward::desc(
      dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, plain_source ? p.plain_src : any(src_dims),
      any(weight_dims), bias_md, any(dst_dims), {s.v[7], s.v[8]}, {s.v[9], s.v[10]}, {s.v[9], s.v[10]});
  dnnl::primitive_attr attr;
  // A scratchpad per call instead of one per primitive: the primitive may run on several
  // threads at once (a prepared convolution is shared by every caller of its layer).
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const dnnl::convolution_forward::primitive_desc pd(desc, attr, cpu_engine());
  p.src = pd.src_desc();
  p.weights = pd.weights_desc();
  p.dst = pd.dst_desc();
  p.bias = bias_md;
  p.scratch = pd.scratchpad_desc();
  p.conv = dnnl::convolution_forward(pd);
  if (p.src != p.plain_src) p.src_to_blocked.emplace(p.plain_src, p.src);
  if (p.dst != p.plain_dst) p.dst_to_plain.emplace(p.dst, p.plain_dst);
  if (p.weights != p.plain_weights) p.weights_to_blocked.emplace(p.plain_weights, p.weights);
  p.out_shape = {s.n(), s.oc(), s.out_h(), s.out_w()};
  p.scratch_bytes = p.scratch.get_size();
  for (const auto* r : {&p.src_to_blocked, &p.dst_to_plain, &p.weights_to_blocked})
    if (*r) p.scratch_bytes = std::max(p.scratch_bytes, (*r)->scratch.get_size());
  return p;
}

/// `make_plan`, with oneDNN's failure (no implementation for the shape) as a `ValueError`
/// that names the shape.
ConvPlan make_plan_or_throw(const ConvShape& s, const memory::desc& given_weights) {
  try {
    return make_plan(s, given_weights);
  } catch (const dnnl::error& e) {
    detail::throw_value_error("nn",
                              "conv2d: oneDNN has no convolution for input [{}, {}, {}, {}], weight [{}, {}, {}, {}], "
                              "stride {}x{}, padding {}x{}: {}",
                              s.n(), s.ic(), s.v[2], s.v[3], s.oc(), s.ic(), s.v[5], s.v[6], s.v[7], s.v[8], s.v[9],
                              s.v[10], e.what());
  }
}

size_t round_up(size_t bytes) { return (bytes + 63) / 64 * 64; }

/// Working memory of the convolution running on this thread (blocked source, destination
/// and weights, oneDNN's scratchpad), kept between calls up to `kKeepBytes`: allocating
/// it per call cost a few microseconds at batch 1 (glibc consolidating freed chunks).
class ThreadBuffer {
 public:
  static char* get(size_t bytes, std::unique_ptr<char, void (*)(void*)>& one_off) {
    constexpr size_t kKeepBytes = size_t{8} << 20;
    bytes = round_up(std::max<size_t>(bytes, 64));
    if (bytes > kKeepBytes) {
      one_off.reset(static_cast<char*>(std::aligned_alloc(64, bytes)));
      return checked(one_off.get());
    }
    thread_local std::unique_ptr<char, void (*)(void*)> kept{nullptr, &std::free};
    thread_local size_t kept_bytes = 0;
    if (bytes > kept_bytes) {
      kept.reset(static_cast<char*>(std::aligned_alloc(64, bytes)));
      kept_bytes = kept ? bytes : 0;
    }
    return checked(kept.get());
  }

 private:
  static char* checked(char* p) {
    if (!p) throw std::bad_alloc();
    return p;
  }
};

/// One thread's memory objects for a plan; only their data handles change per call.
struct PlanMemories {
  uint64_t plan_id = 0;
  memory plain_src, src, plain_weights, weights, bias, dst, plain_dst, scratch;
};

PlanMemories& memories_for(const ConvPlan& plan) {
  constexpr size_t kMaxPlans = 32;
  thread_local std::list<PlanMemories> cache;  // most recently used first
  for (auto it = cache.begin(); it != cache.end(); ++it)
    if (it->plan_id == plan.id) {
      if (it != cache.begin()) cache.splice(cache.begin(), cache, it);
      return cache.front();
    }
  auto& engine = cpu_engine();
  auto none = [&](const memory::desc& md) { return memory(md, engine, DNNL_MEMORY_NONE); };
  PlanMemories m{plan.id,         none(plan.plain_src), none(plan.src), none(plan.plain_weights), none(plan.weights),
                 none(plan.bias), none(plan.dst),       none(plan.plain_dst), none(plan.scratch)};
  cache.push_front(std::move(m));
  if (cache.size() > kMaxPlans) cache.pop_back();
  return cache.front();
}

/// Runs `plan` on a contiguous NCHW `input`. `weights` holds the weights in the layout
/// `blocked_weights` says: the plan's own (prepared once) or its `plain_weights` (then
/// reordered into working memory here).
torch::Tensor run_plan(const ConvPlan& plan, const torch::Tensor& input, const void* weights, bool blocked_weights,
                       const torch::Tensor& bias) {
  // Seen by LibTorch's profiler and observers like an ATen convolution.
  RECORD_FUNCTION("dydnn::conv2d", c10::ArrayRef<const c10::IValue>{});
  auto& stream = thread_stream();
  auto& m = memories_for(plan);
  auto out = torch::empty(plan.out_shape, input.options());
  const size_t src_bytes = plan.src_to_blocked ? round_up(plan.src.get_size()) : 0;
  const size_t dst_bytes = plan.dst_to_plain ? round_up(plan.dst.get_size()) : 0;
  const size_t weight_bytes = blocked_weights || !plan.weights_to_blocked ? 0 : round_up(plan.weights.get_size());
  std::unique_ptr<char, void (*)(void*)> one_off{nullptr, &std::free};
  char* work = ThreadBuffer::get(src_bytes + dst_bytes + weight_bytes + plan.scratch_bytes, one_off);
  char* scratch = work + src_bytes + dst_bytes + weight_bytes;
  m.plain_src.set_data_handle(input.data_ptr());
  m.plain_dst.set_data_handle(out.data_ptr());
  const memory* src = &m.plain_src;
  if (plan.src_to_blocked) {
    m.src.set_data_handle(work);
    plan.src_to_blocked->execute(m.plain_src, m.src, scratch);
    src = &m.src;
  }
  const memory* dst = &m.plain_dst;
  if (plan.dst_to_plain) {
    m.dst.set_data_handle(work + src_bytes);
    dst = &m.dst;
  }
  const memory* w = &m.weights;
  if (blocked_weights || !plan.weights_to_blocked) {
    m.weights.set_data_handle(const_cast<void*>(weights));
  } else {
    m.plain_weights.set_data_handle(const_cast<void*>(weights));
    m.weights.set_data_handle(work + src_bytes + dst_bytes);
    plan.weights_to_blocked->execute(m.plain_weights, m.weights, scratch);
  }
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, *src}, {DNNL_ARG_WEIGHTS, *w}, {DNNL_ARG_DST, *dst}};
  if (bias.defined()) {
    m.bias.set_data_handle(bias.data_ptr());
    args.emplace(DNNL_ARG_BIAS, m.bias);
  }
  if (plan.scratch.get_size() > 0) {
    m.scratch.set_data_handle(scratch);
    args.emplace(DNNL_ARG_SCRATCHPAD, m.scratch);
  }
  plan.conv.execute(stream, args);
  if (plan.dst_to_plain) plan.dst_to_plain->execute(m.dst, m.plain_dst, scratch);
  stream.wait();
  return out;
}

bool output_is_empty(const ConvShape& s) { return s.n() == 0 || s.oc() == 0 || s.out_h() <= 0 || s.out_w() <= 0; }

/// The plans of the plain (unprepared) path, per thread: a fresh run hands a weight view
/// whose strides the plan's weight reorder is made for.
struct PlainPlan {
  ConvShape shape;
  std::vector<int64_t> weight_strides;
  ConvPlan plan;
};

const ConvPlan& plain_plan_for(const ConvShape& shape, const torch::Tensor& weight) {
  constexpr size_t kMaxPlans = 64;
  thread_local std::list<PlainPlan> plans;  // most recently used first
  const auto strides = weight.strides();
  for (auto it = plans.begin(); it != plans.end(); ++it) {
    if (it->shape == shape && strides.equals(it->weight_strides)) {
      if (it != plans.begin()) plans.splice(plans.begin(), plans, it);
      return plans.front().plan;
    }
  }
  const memory::desc strided_weights(dims_of(weight.sizes()), memory::data_type::f32, dims_of(strides));
  plans.push_front(PlainPlan{shape, strides.vec(), make_plan_or_throw(shape, strided_weights)});
  if (plans.size() > kMaxPlans) plans.pop_back();
  return plans.front().plan;
}

torch::Tensor direct_conv2d(const ConvShape& shape, const torch::Tensor& input, const torch::Tensor& weight,
                            const torch::Tensor& bias) {
  at::internal::lazy_init_num_threads();  // oneDNN then uses LibTorch's thread count on this thread
  // A zero stride (an expanded weight) has no oneDNN layout.
  const torch::Tensor w = *std::min_element(weight.strides().begin(), weight.strides().end()) > 0 ? weight : weight.contiguous();
  const auto& plan = plain_plan_for(shape, w);
  return run_plan(plan, input.contiguous(), w.data_ptr(), false, bias.defined() ? bias.contiguous() : bias);
}
#endif

}  // namespace

bool direct_onednn_available() {
#if DYDNN_HAVE_ONEDNN
  return true;
#else
  return false;
#endif
}

torch::Tensor conv2d_fast(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias,
                          torch::IntArrayRef stride, torch::IntArrayRef padding) {
  if (!uses_onednn(input)) return at::conv2d(input, weight, bias, stride, padding);
  check_shapes(input, weight.sizes(), bias);
#if DYDNN_HAVE_ONEDNN
  if (weight.layout() == torch::kStrided && weight.scalar_type() == torch::kFloat &&
      (!bias.defined() || bias.scalar_type() == torch::kFloat) && !needs_autograd(input, weight, bias)) {
    if (stride.size() == 2 && padding.size() == 2) {
      const ConvShape shape(input, weight.sizes(), bias.defined(), stride, padding);
      if (!output_is_empty(shape)) return direct_conv2d(shape, input, weight, bias);
    }
  }
#endif
  const int64_t dilation[2] = {1, 1};
  return at::mkldnn_convolution(input, weight, bias, padding, stride, dilation, 1);
}

/// Per input shape: the plan and the weights reordered once into its layout.
struct PreparedConv2d::Impl {
  torch::Tensor weight, bias;
  std::vector<int64_t> stride, padding;
  uint64_t version = 0;
  mutable std::mutex mutex;
#if DYDNN_HAVE_ONEDNN
  struct Shape {
    ConvShape shape;
    ConvPlan plan;
    torch::Tensor weight_buffer;  // the weights in the plan's layout; undefined when it reads `weight`
  };
  // Shared: a caller keeps running its shape's plan when another evicts it.
  mutable std::list<std::shared_ptr<const Shape>> shapes;  // most recently used first
  static constexpr size_t kMaxShapes = 8;
#else
  torch::Tensor reordered;  // LibTorch's oneDNN layout
#endif
};

PreparedConv2d::PreparedConv2d(const torch::Tensor& weight, const torch::Tensor& bias, torch::IntArrayRef stride,
                               torch::IntArrayRef padding)
    : impl_(std::make_unique<Impl>()) {
  DYDNN_CHECK_VALUE(weight.dim() == 4, "nn", "PreparedConv2d: expected a 4D weight [C_out, C_in, kh, kw] (got {}D)",
                    weight.dim());
  DYDNN_CHECK_VALUE(uses_onednn(weight), "nn", "PreparedConv2d: the weight must be a CPU float32 tensor (got {} {})",
                    weight.device().str(), c10::toString(weight.scalar_type()));
  DYDNN_CHECK_VALUE(!bias.defined() || bias.scalar_type() == torch::kFloat, "nn",
                    "PreparedConv2d: the bias must be float32 like the weight (got {})", c10::toString(bias.scalar_type()));
  DYDNN_CHECK_VALUE(stride.size() == 2 && padding.size() == 2, "nn",
                    "PreparedConv2d: stride and padding need 2 values each (got {} and {})", stride.size(),
                    padding.size());
  torch::NoGradGuard no_grad;
  impl_->weight = weight.contiguous();
  impl_->bias = bias.defined() ? bias.contiguous() : bias;
  impl_->stride = stride.vec();
  impl_->padding = padding.vec();
  impl_->version = weight.is_inference() ? 0 : weight._version();
#if !DYDNN_HAVE_ONEDNN
  impl_->reordered = prepare_conv2d_weight(impl_->weight, stride, padding);
#endif
}

PreparedConv2d::~PreparedConv2d() = default;

torch::Tensor PreparedConv2d::operator()(const torch::Tensor& input) const {
  auto& d = *impl_;
  const uint64_t version = d.weight.is_inference() ? 0 : d.weight._version();
#if DYDNN_HAVE_ONEDNN
  if (!uses_onednn(input)) return conv2d_fast(input, d.weight, d.bias, d.stride, d.padding);
  check_shapes(input, d.weight.sizes(), d.bias);
  at::internal::lazy_init_num_threads();
  const ConvShape shape(input, d.weight.sizes(), d.bias.defined(), d.stride, d.padding);
  if (output_is_empty(shape)) return conv2d_fast(input, d.weight, d.bias, d.stride, d.padding);
  const auto x = input.contiguous();
  std::unique_lock<std::mutex> lock(d.mutex);
  if (version != d.version) {  // changed in place since: the reordered copies are stale
    d.shapes.clear();
    d.version = version;
  }
  auto it = d.shapes.begin();
  while (it != d.shapes.end() && !((*it)->shape == shape)) ++it;
  if (it == d.shapes.end()) {
    const memory::desc plain(dims_of(d.weight.sizes()), memory::data_type::f32, Tag::oihw);
    auto made = std::make_shared<Impl::Shape>(Impl::Shape{shape, make_plan_or_throw(shape, plain), {}});
    if (made->plan.weights_to_blocked) {
      made->weight_buffer = torch::empty({static_cast<int64_t>(made->plan.weights.get_size())}, torch::kUInt8);
      const memory from(plain, cpu_engine(), d.weight.data_ptr());
      const memory to(made->plan.weights, cpu_engine(), made->weight_buffer.data_ptr());
      std::unique_ptr<char, void (*)(void*)> one_off{nullptr, &std::free};
      made->plan.weights_to_blocked->execute(from, to, ThreadBuffer::get(made->plan.scratch_bytes, one_off));
      thread_stream().wait();
    }
    d.shapes.push_front(std::move(made));
    if (d.shapes.size() > Impl::kMaxShapes) d.shapes.pop_back();
  } else if (it != d.shapes.begin()) {
    d.shapes.splice(d.shapes.begin(), d.shapes, it);
  }
  const auto entry = d.shapes.front();
  lock.unlock();
  return run_plan(entry->plan, x, entry->weight_buffer.defined() ? entry->weight_buffer.data_ptr() : d.weight.data_ptr(),
                  true, d.bias);
#else
  if (uses_onednn(input)) check_shapes(input, d.weight.sizes(), d.bias);
  torch::Tensor reordered;
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    if (version != d.version) {  // changed in place since: the reordered copy is stale
      d.reordered = prepare_conv2d_weight(d.weight, d.stride, d.padding);
      d.version = version;
    }
    reordered = d.reordered;
  }
  return conv2d_fast(input, uses_onednn(input) && reordered.defined() ? reordered : d.weight, d.bias, d.stride,
                     d.padding);
#endif
}

int64_t PreparedConv2d::bytes() const {
  auto& d = *impl_;
  std::lock_guard<std::mutex> lock(d.mutex);
  int64_t total = 0;
#if DYDNN_HAVE_ONEDNN
  for (const auto& s : d.shapes)
    if (s->weight_buffer.defined()) total += s->weight_buffer.numel();
#else
  if (d.reordered.defined()) total += d.reordered.numel() * static_cast<int64_t>(sizeof(float));
#endif
  return total;
}

std::shared_ptr<const PreparedConv2d> prepare_conv2d(const torch::Tensor& weight, const torch::Tensor& bias,
                                                     torch::IntArrayRef stride, torch::IntArrayRef padding) {
  if (!uses_onednn(weight) || weight.dim() != 4) return nullptr;
  return std::make_shared<const PreparedConv2d>(weight, bias, stride, padding);
}

}  // namespace nn
}  // namespace dydnn
