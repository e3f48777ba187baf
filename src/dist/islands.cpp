#include <dydnn/dist/islands.h>
#include <dydnn/errors.h>
#include <dydnn/nn/dynamic_net.h>

namespace dydnn {
namespace dist {

std::string to_string(Flow flow) {
  switch (flow) {
    case Flow::Late: return "late";
    case Flow::Cross: return "cross";
    case Flow::Exchange: return "exchange";
  }
  return "?";
}

bool Split::sends(int64_t p, int64_t k) const {
  switch (flow) {
    case Flow::Late: return p == 0 && k == num_blocks - 1;
    case Flow::Cross: return p == 0;
    case Flow::Exchange: return p == 0 || k < num_blocks - 1;  // part 1 runs the head: its last output stays
  }
  return false;
}

bool Split::reads_inside(int64_t p) const { return flow == Flow::Exchange || (flow == Flow::Cross && p == 1); }

namespace {

nn::Config halves(int64_t groups, bool first) {
  uint64_t mask = 0;
  for (int64_t g = first ? 0 : groups / 2; g < (first ? groups / 2 : groups); ++g) mask |= uint64_t{1} << g;
  return nn::Config(mask);
}

}  // namespace

Split split_for(const nn::DynamicNetImpl& net, Mode mode) {
  const auto& c = net.connectivity();
  const std::string& name = net.spec().name;
  Split s;
  s.mode = mode;
  s.num_blocks = net.num_blocks();
  s.combined = c.full_config();
  if (mode == Mode::HighThroughput || mode == Mode::HighAccuracy) {
    DYDNN_CHECK_VALUE(c.kind() == nn::ConnectivityKind::Fluid && c.islands().size() == 2, "dist",
                      "mode '{}' needs a fluid model with two islands; '{}' has connectivity '{}' with {} island(s) "
                      "(train one with: dydnn train --spec fashion_mnist_fluid --method nested)",
                      to_string(mode), name, c.name(), c.islands().size());
    for (const auto& island : c.islands()) s.parts.push_back(nn::Config::of(island));
    s.standalone = s.parts;
    s.flow = c.cross_edges() ? Flow::Cross : Flow::Late;
    for (const auto& p : s.parts)
      DYDNN_CHECK_VALUE(c.is_valid(p), "dist", "model '{}': island {} is not a valid config (valid: {})", name,
                        p.name(), nn::to_string(c.valid_configs()));
  } else {
    const int64_t g = c.num_groups();
    DYDNN_CHECK_VALUE(g >= 2, "dist", "mode '{}' splits the groups over two devices; '{}' has {} group (valid: >= 2)",
                      to_string(mode), name, g);
    s.parts = {halves(g, true), halves(g, false)};
    if (mode == Mode::Dynamic) {
      bool reads_later = false;
      for (int64_t j : s.parts[0].groups())
        reads_later |= (c.inputs_of(j).mask() & s.parts[1].mask()) != 0;
      DYDNN_CHECK_VALUE(!reads_later && c.is_valid(s.parts[0]), "dist",
                        "mode 'dynamic' needs a model whose first groups {} run alone (incremental, e.g. "
                        "'dydnn train --method incremental'); '{}' has connectivity '{}' (valid configs: {})",
                        s.parts[0].name(), name, c.name(), nn::to_string(c.valid_configs()));
      s.standalone = {s.parts[0], nn::Config()};
      s.flow = Flow::Cross;
    } else {
      s.standalone = {nn::Config(), nn::Config()};
      s.flow = Flow::Exchange;
    }
  }
  DYDNN_CHECK_VALUE(c.is_valid(s.combined), "dist", "model '{}': the combined config {} is not valid (valid: {})", name,
                    s.combined.name(), nn::to_string(c.valid_configs()));
  return s;
}

}  // namespace dist
}  // namespace dydnn
