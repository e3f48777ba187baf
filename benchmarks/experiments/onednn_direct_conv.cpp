// Experiment (not built by CMake) behind src/nn/onednn_conv.cpp: the per-call cost at batch 1
// of a oneDNN convolution primitive created once and executed directly, against what LibTorch
// 1.13's mkldnn_convolution costs per call (docs/depth.md: ~25 us whatever the size), and a
// plain against a blocked source (the library's choice for few input channels). Debian's torch
// links the system oneDNN (libdnnl.so.2, 2.6.3); libdnnl-dev 2.6.3 has the matching headers.
// Shapes: the layers of fashion_mnist_exits (conv0 1->32 @28x28, conv1 32->64 @14x14) and the
// rows of one group (8 and 16 channels) that a refinement computes.
//
//   apt-get download libdnnl-dev && dpkg-deb -x libdnnl-dev_*.deb /tmp/dnnl
//   g++ -O2 -std=c++17 -I /tmp/dnnl/usr/include benchmarks/experiments/onednn_direct_conv.cpp \
//       -o /tmp/onednn_direct_conv /usr/lib/x86_64-linux-gnu/libdnnl.so.2
//   OMP_NUM_THREADS=1 /tmp/onednn_direct_conv
#include <dnnl.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>
using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

static double bench(int ic, int oc, int hw, bool dst_any, bool src_any = false) {
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  memory::dims src_d = {1, ic, hw, hw}, w_d = {oc, ic, 3, 3}, b_d = {oc}, dst_d = {1, oc, hw, hw};
  auto src_md = memory::desc(src_d, dt::f32, src_any ? tag::any : tag::nchw);
  auto dst_md = memory::desc(dst_d, dt::f32, dst_any ? tag::any : tag::nchw);
  auto w_any = memory::desc(w_d, dt::f32, tag::any);
  auto b_md = memory::desc(b_d, dt::f32, tag::x);
  auto desc = convolution_forward::desc(prop_kind::forward_inference, algorithm::convolution_direct, src_md, w_any,
                                        b_md, dst_md, {1, 1}, {1, 1}, {1, 1});
  auto pd = convolution_forward::primitive_desc(desc, eng);
  std::vector<float> src(ic * hw * hw, 0.5f), w(oc * ic * 9, 0.01f), b(oc, 0.1f), dst(oc * hw * hw);
  memory src_plain(memory::desc(src_d, dt::f32, tag::nchw), eng, src.data());
  memory src_m(pd.src_desc(), eng);
  reorder(src_plain, src_m).execute(s, src_plain, src_m);
  memory w_plain(memory::desc(w_d, dt::f32, tag::oihw), eng, w.data());
  memory b_m(b_md, eng, b.data());
  memory w_m(pd.weights_desc(), eng);
  reorder(w_plain, w_m).execute(s, w_plain, w_m);  // once
  memory dst_m(pd.dst_desc(), eng);
  convolution_forward conv(pd);
  std::vector<double> t;
  for (int k = 0; k < 2200; ++k) {
    auto a = std::chrono::steady_clock::now();
    conv.execute(s, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, w_m}, {DNNL_ARG_BIAS, b_m}, {DNNL_ARG_DST, dst_m}});
    s.wait();
    auto z = std::chrono::steady_clock::now();
    if (k >= 200) t.push_back(std::chrono::duration<double, std::micro>(z - a).count());
  }
  std::sort(t.begin(), t.end());
  std::printf("conv %d->%d @%dx%d src %s dst %s: median %.1f us (impl %s)\n", ic, oc, hw, hw, src_any ? "any" : "nchw", dst_any ? "any" : "nchw",
              t[t.size() / 2], pd.impl_info_str());
  return t[t.size() / 2];
}

int main() {
  bench(32, 16, 14, true, true);
  bench(32, 64, 14, true, true);
  bench(1, 8, 28, true, true);
  {  // the cost of reordering a 32x14x14 nchw tensor to blocked
    engine eng(engine::kind::cpu, 0); stream s(eng);
    memory::dims d = {1, 32, 14, 14};
    std::vector<float> a(32 * 196, 1.f);
    memory p(memory::desc(d, dt::f32, tag::nchw), eng, a.data()), q(memory::desc(d, dt::f32, tag::nChw16c), eng);
    reorder r(p, q); std::vector<double> t;
    for (int k = 0; k < 2200; ++k) { auto x = std::chrono::steady_clock::now(); r.execute(s, p, q); s.wait();
      if (k >= 200) t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - x).count()); }
    std::sort(t.begin(), t.end()); std::printf("reorder 32x14x14 nchw->nChw16c: median %.1f us\n", t[t.size() / 2]);
  }
  for (bool any : {false, true}) {
    bench(1, 8, 28, any);    // conv0 rows D
    bench(1, 32, 28, any);   // conv0 full
    bench(32, 16, 14, any);  // conv1 rows D
    bench(32, 64, 14, any);  // conv1 full
  }
}
