#include <dydnn/errors.h>
#include <dydnn/nn/spec.h>

#include <array>
#include <cmath>
#include <fstream>
#include <sstream>

namespace dydnn {
namespace nn {

std::string to_string(HeadKind kind) {
  switch (kind) {
    case HeadKind::Additive: return "additive";
    case HeadKind::PerConfig: return "per_config";
    case HeadKind::Prefix: return "prefix";
  }
  return "additive";
}

namespace {

constexpr int kFormatVersion = 1;

// "[dydnn.nn] text" -> "text", to wrap a nested error without repeating the tag.
std::string without_prefix(const std::string& message) {
  if (message.rfind("[dydnn.", 0) == 0) {
    auto end = message.find("] ");
    if (end != std::string::npos) return message.substr(end + 2);
  }
  return message;
}

// Parsing state for one spec text: every error names the source and line.
class Parser {
 public:
  Parser(std::string source) : source_(std::move(source)) {}

  template <typename... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) const {
    detail::throw_value_error("spec", "{}:{}: {}", source_, line_, fmt::format(format, std::forward<Args>(args)...));
  }

  int64_t integer(const std::string& token, const char* what, int64_t min_value) const {
    int64_t value = 0;
    size_t used = 0;
    try {
      value = std::stoll(token, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != token.size() || token.empty()) fail("{} '{}' is not an integer", what, token);
    if (value < min_value) fail("{} {} is out of range (valid: >= {})", what, value, min_value);
    return value;
  }

  std::vector<std::string> split(const std::string& text, char sep) const {
    std::vector<std::string> out;
    std::string item;
    std::istringstream stream(text);
    while (std::getline(stream, item, sep)) out.push_back(item);
    if (!text.empty() && text.back() == sep) out.emplace_back();
    return out;
  }

  std::vector<int64_t> integers(const std::string& text, const char* what, int64_t min_value) const {
    std::vector<int64_t> out;
    for (const auto& t : split(text, ',')) out.push_back(integer(t, what, min_value));
    if (out.empty()) fail("{} list is empty", what);
    return out;
  }

  NetSpec run(const std::string& text) {
    NetSpec spec;
    spec.layers.clear();
    bool header = false;
    std::istringstream lines(text);
    std::string raw;
    std::vector<std::string> config_lines;
    while (std::getline(lines, raw)) {
      ++line_;
      if (auto hash = raw.find('#'); hash != std::string::npos) raw.erase(hash);
      std::istringstream words(raw);
      std::vector<std::string> tokens;
      for (std::string w; words >> w;) tokens.push_back(w);
      if (tokens.empty()) continue;
      const std::string& key = tokens[0];
      if (!header) {
        if (key != "dydnn-spec" || tokens.size() != 2)
          fail("the first line must be 'dydnn-spec {}' (got '{}')", kFormatVersion, raw);
        if (integer(tokens[1], "format version", 1) > kFormatVersion)
          fail("format version {} is newer than this dydnn reads (valid: {})", tokens[1], kFormatVersion);
        header = true;
        continue;
      }
      if (key == "name") {
        expect_count(tokens, 2, "name NAME");
        spec.name = tokens[1];
      } else if (key == "input") {
        expect_count(tokens, 4, "input CHANNELS HEIGHT WIDTH");
        spec.in_channels = integer(tokens[1], "input channels", 1);
        spec.height = integer(tokens[2], "input height", 1);
        spec.width = integer(tokens[3], "input width", 1);
      } else if (key == "classes") {
        expect_count(tokens, 2, "classes COUNT");
        spec.classes = integer(tokens[1], "classes", 2);
      } else if (key == "groups") {
        parse_groups(tokens, spec);
      } else if (key == "connectivity") {
        parse_connectivity(tokens, spec);
      } else if (key == "head") {
        expect_count(tokens, 2, "head additive|per_config|prefix");
        if (tokens[1] == "additive") spec.head = HeadKind::Additive;
        else if (tokens[1] == "per_config") spec.head = HeadKind::PerConfig;
        else if (tokens[1] == "prefix") spec.head = HeadKind::Prefix;
        else fail("unknown head '{}' (valid: additive, per_config, prefix)", tokens[1]);
      } else if (key == "conv" || key == "linear") {
        spec.layers.push_back(parse_layer(tokens));
      } else if (key == "exit") {
        spec.exits.push_back(parse_exit(tokens));
      } else if (key == "configs") {
        std::string rest;
        for (size_t k = 1; k < tokens.size(); ++k) rest += tokens[k];
        config_lines = split(rest, '|');
        config_line_ = line_;
      } else {
        fail("unknown key '{}' (valid: name, input, classes, groups, connectivity, head, conv, linear, exit, configs)", key);
      }
    }
    if (!header) fail("empty spec: the first line must be 'dydnn-spec {}'", kFormatVersion);
    if (spec.layers.empty()) fail("the spec has no layer (add 'conv ...' or 'linear ...' lines)");
    for (const auto& text_config : config_lines) {
      line_ = config_line_;
      try {
        spec.configs.push_back(Config::parse(text_config, spec.groups));
      } catch (const ValueError& e) {
        fail("bad config '{}': {}", text_config, without_prefix(e.what()));
      }
    }
    try {
      spec.validate();
    } catch (const ValueError& e) {
      detail::throw_value_error("spec", "{}: {}", source_, without_prefix(e.what()));
    }
    return spec;
  }

 private:
  void expect_count(const std::vector<std::string>& tokens, size_t count, const char* usage) const {
    if (tokens.size() != count) fail("'{}' takes {} value(s): {}", tokens[0], count - 1, usage);
  }

  void parse_groups(const std::vector<std::string>& tokens, NetSpec& spec) const {
    if (tokens.size() < 2 || tokens.size() > 3) fail("usage: groups G [ratios=R1,R2,...]");
    spec.groups = integer(tokens[1], "groups", 1);
    if (spec.groups > kMaxGroups) fail("groups {} is out of range (valid: 1..{})", spec.groups, kMaxGroups);
    if (tokens.size() == 3) {
      if (tokens[2].rfind("ratios=", 0) != 0) fail("unknown groups option '{}' (valid: ratios=R1,R2,...)", tokens[2]);
      spec.ratios.clear();
      for (const auto& r : split(tokens[2].substr(7), ',')) {
        try {
          size_t used = 0;
          spec.ratios.push_back(std::stod(r, &used));
          if (used != r.size()) throw std::invalid_argument(r);
        } catch (const std::exception&) {
          fail("ratio '{}' is not a number", r);
        }
      }
      if (static_cast<int64_t>(spec.ratios.size()) != spec.groups)
        fail("{} ratios for {} groups (they must match)", spec.ratios.size(), spec.groups);
    }
  }

  void parse_connectivity(const std::vector<std::string>& tokens, NetSpec& spec) const {
    if (tokens.size() < 2) fail("usage: connectivity prefix|incremental|independent|fluid [islands=0,1/2,3] [cross=on|off]");
    spec.connectivity = tokens[1];
    if (spec.connectivity != "prefix" && spec.connectivity != "incremental" && spec.connectivity != "independent" &&
        spec.connectivity != "fluid")
      fail("unknown connectivity '{}' (valid: prefix, incremental, independent, fluid)", spec.connectivity);
    for (size_t k = 2; k < tokens.size(); ++k) {
      const auto& t = tokens[k];
      if (spec.connectivity != "fluid") fail("option '{}' applies only to 'fluid'", t);
      if (t.rfind("islands=", 0) == 0) {
        spec.islands.clear();
        for (const auto& island : split(t.substr(8), '/')) spec.islands.push_back(integers(island, "island group", 0));
      } else if (t == "cross=on" || t == "cross=off") {
        spec.cross_edges = t == "cross=on";
      } else {
        fail("unknown fluid option '{}' (valid: islands=0,1/2,3, cross=on|off)", t);
      }
    }
    if (spec.connectivity == "fluid" && spec.islands.empty()) fail("'fluid' needs islands=... (e.g. islands=0,1/2,3)");
  }

  ExitSpec parse_exit(const std::vector<std::string>& tokens) const {
    ExitSpec exit;
    bool has_after = false;
    for (size_t k = 1; k < tokens.size(); ++k) {
      const auto& t = tokens[k];
      if (t.rfind("after=", 0) == 0) {
        exit.after = integer(t.substr(6), "exit after", 1);
        has_after = true;
      } else if (t.rfind("avgpool=", 0) == 0) {
        exit.avg_pool = integer(t.substr(8), "exit avgpool", 1);
      } else {
        fail("unknown exit option '{}' (valid: after=K, avgpool=P)", t);
      }
    }
    if (!has_after) fail("usage: exit after=K [avgpool=P] (K = feature layers before the exit)");
    return exit;
  }

  LayerSpec parse_layer(const std::vector<std::string>& tokens) const {
    LayerSpec layer;
    layer.kind = tokens[0] == "conv" ? LayerKind::Conv : LayerKind::Linear;
    if (tokens.size() < 2) fail("usage: {} CHANNELS [options]", tokens[0]);
    layer.channels = integer(tokens[1], "channels", 1);
    const bool conv = layer.kind == LayerKind::Conv;
    for (size_t k = 2; k < tokens.size(); ++k) {
      const auto& t = tokens[k];
      const auto eq = t.find('=');
      const std::string name = t.substr(0, eq);
      const std::string value = eq == std::string::npos ? "" : t.substr(eq + 1);
      const bool has_value = eq != std::string::npos;
      if (name == "relu" && !has_value) layer.relu = true;
      else if (name == "groups" && has_value) layer.group_sizes = integers(value, "group size", 1);
      else if (conv && name == "bn" && !has_value) layer.batch_norm = true;
      else if (conv && name == "gap" && !has_value) layer.global_avg_pool = true;
      else if (conv && name == "kernel" && has_value) layer.kernel = integer(value, "kernel", 1);
      else if (conv && name == "stride" && has_value) layer.stride = integer(value, "stride", 1);
      else if (conv && name == "padding" && has_value) layer.padding = integer(value, "padding", 0);
      else if (conv && name == "maxpool" && has_value) layer.max_pool = integer(value, "maxpool", 1);
      else if (conv && name == "avgpool" && has_value) layer.avg_pool = integer(value, "avgpool", 1);
      else
        fail("unknown option '{}' for {} (valid: {})", t, tokens[0],
             conv ? "kernel=K, stride=S, padding=P, groups=N1,N2,..., bn, relu, maxpool=K, avgpool=K, gap"
                  : "groups=N1,N2,..., relu");
    }
    return layer;
  }

  std::string source_;
  int line_ = 0;
  int config_line_ = 0;
};

}  // namespace

NetSpec NetSpec::parse(const std::string& text, const std::string& source) { return Parser(source).run(text); }

NetSpec NetSpec::load(const std::string& path) {
  std::ifstream in(path);
  DYDNN_CHECK_VALUE(in.good(), "spec", "cannot read spec file '{}'", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  DYDNN_CHECK_VALUE(!in.bad(), "spec", "cannot read spec file '{}'", path);
  return parse(buffer.str(), path);
}

Connectivity NetSpec::make_connectivity() const {
  Connectivity conn = connectivity == "fluid" ? Connectivity::fluid(islands, cross_edges)
                                              : Connectivity::from_name(connectivity, groups);
  DYDNN_CHECK_VALUE(conn.num_groups() == groups, "spec", "the fluid islands hold {} groups but 'groups' is {}",
                    conn.num_groups(), groups);
  return configs.empty() ? conn : conn.with_configs(configs);
}

GroupSpec NetSpec::group_spec(const LayerSpec& layer) const {
  if (!layer.group_sizes.empty()) {
    auto spec = GroupSpec::counts(layer.group_sizes);
    DYDNN_CHECK_VALUE(spec.channels() == layer.channels, "spec",
                      "groups={} add up to {} channels, but the layer has {}", spec.to_string(), spec.channels(),
                      layer.channels);
    DYDNN_CHECK_VALUE(spec.num_groups() == groups, "spec", "groups={} has {} groups, but the spec has {}",
                      spec.to_string(), spec.num_groups(), groups);
    return spec;
  }
  return ratios.empty() ? GroupSpec::equal(layer.channels, groups) : GroupSpec::ratios(layer.channels, ratios);
}

void NetSpec::validate() const {
  // Bounds keep every size computation far from int64 overflow, even for a spec read
  // from a damaged or hostile model file.
  const auto in_range = [](int64_t value, int64_t low, const char* what) {
    DYDNN_CHECK_VALUE(value >= low && value <= kMaxDimension, "spec", "{} {} is out of range (valid: {}..{})", what,
                      value, low, kMaxDimension);
  };
  in_range(in_channels, 1, "input channels");
  in_range(height, 1, "input height");
  in_range(width, 1, "input width");
  in_range(classes, 1, "classes");
  for (const double r : ratios)
    DYDNN_CHECK_VALUE(std::isfinite(r) && r > 0 && r <= 1e6, "spec", "group ratio {} is out of range (valid: > 0)", r);
  for (const auto& layer : layers) {
    in_range(layer.channels, 1, "channels");
    in_range(layer.kernel, 1, "kernel");
    in_range(layer.stride, 1, "stride");
    in_range(layer.padding, 0, "padding");
    in_range(layer.max_pool, 0, "maxpool");
    in_range(layer.avg_pool, 0, "avgpool");
  }
  make_connectivity();
  int64_t h = height, w = width;
  bool flat = false;
  for (size_t k = 0; k < layers.size(); ++k) {
    const auto& layer = layers[k];
    group_spec(layer);
    if (layer.kind == LayerKind::Linear) {
      flat = true;
      continue;
    }
    DYDNN_CHECK_VALUE(!flat, "spec", "layer {}: a conv cannot follow a linear layer", k);
    h = (h + 2 * layer.padding - layer.kernel) / layer.stride + 1;
    w = (w + 2 * layer.padding - layer.kernel) / layer.stride + 1;
    DYDNN_CHECK_VALUE(h >= 1 && w >= 1, "spec", "layer {}: kernel {} leaves no output pixel", k, layer.kernel);
    DYDNN_CHECK_VALUE((layer.max_pool != 0) + (layer.avg_pool != 0) + layer.global_avg_pool <= 1, "spec",
                      "layer {}: at most one of maxpool, avgpool, gap", k);
    const int64_t pool = std::max(layer.max_pool, layer.avg_pool);
    if (pool > 0) {
      DYDNN_CHECK_VALUE(pool <= h && pool <= w, "spec", "layer {}: pool {} is larger than the {}x{} feature map", k,
                        pool, h, w);
      h /= pool;
      w /= pool;
    }
    if (layer.global_avg_pool) h = w = 1;
  }
  exit_shapes();
}

std::vector<std::array<int64_t, 3>> NetSpec::exit_shapes() const {
  // The shape [C, H, W] of every layer's output (H = W = 1 for linear layers).
  std::vector<std::array<int64_t, 3>> shapes;
  int64_t h = height, w = width;
  for (const auto& layer : layers) {
    if (layer.kind == LayerKind::Linear) {
      h = w = 1;
    } else {
      h = (h + 2 * layer.padding - layer.kernel) / layer.stride + 1;
      w = (w + 2 * layer.padding - layer.kernel) / layer.stride + 1;
      const int64_t pool = std::max(layer.max_pool, layer.avg_pool);
      if (pool > 0) h /= pool, w /= pool;
      if (layer.global_avg_pool) h = w = 1;
    }
    shapes.push_back({layer.channels, h, w});
  }
  std::vector<std::array<int64_t, 3>> out;
  int64_t previous = 0;
  const auto last = static_cast<int64_t>(layers.size());
  for (size_t e = 0; e < exits.size(); ++e) {
    const auto& x = exits[e];
    DYDNN_CHECK_VALUE(x.after >= 1 && x.after < last, "spec", "exit {}: after={} is out of range (valid: 1..{})", e,
                      x.after, last - 1);
    DYDNN_CHECK_VALUE(x.after > previous, "spec", "exit {}: after={} must be larger than the previous exit's ({})", e,
                      x.after, previous);
    previous = x.after;
    auto shape = shapes[x.after - 1];
    if (x.avg_pool > 0) {
      DYDNN_CHECK_VALUE(layers[x.after - 1].kind == LayerKind::Conv, "spec",
                        "exit {}: avgpool={} needs a conv layer before it (layer {} is linear)", e, x.avg_pool,
                        x.after - 1);
      DYDNN_CHECK_VALUE(x.avg_pool <= shape[1] && x.avg_pool <= shape[2] && x.avg_pool <= kMaxDimension, "spec",
                        "exit {}: avgpool={} is larger than the {}x{} feature map", e, x.avg_pool, shape[1], shape[2]);
      shape[1] /= x.avg_pool;
      shape[2] /= x.avg_pool;
    }
    out.push_back(shape);
  }
  return out;
}

std::string NetSpec::to_text() const {
  std::string out = fmt::format("dydnn-spec {}\nname {}\ninput {} {} {}\nclasses {}\ngroups {}", kFormatVersion, name,
                                in_channels, height, width, classes, groups);
  if (!ratios.empty()) out += fmt::format(" ratios={}", fmt::join(ratios, ","));
  out += "\nconnectivity " + connectivity;
  if (connectivity == "fluid") {
    std::vector<std::string> parts;
    for (const auto& island : islands) parts.push_back(fmt::format("{}", fmt::join(island, ",")));
    out += fmt::format(" islands={} cross={}", fmt::join(parts, "/"), cross_edges ? "on" : "off");
  }
  out += "\nhead " + to_string(head) + "\n";
  for (const auto& l : layers) {
    if (l.kind == LayerKind::Conv) {
      out += fmt::format("conv {} kernel={} stride={} padding={}", l.channels, l.kernel, l.stride, l.padding);
    } else {
      out += fmt::format("linear {}", l.channels);
    }
    if (!l.group_sizes.empty()) out += fmt::format(" groups={}", fmt::join(l.group_sizes, ","));
    if (l.batch_norm) out += " bn";
    if (l.relu) out += " relu";
    if (l.max_pool) out += fmt::format(" maxpool={}", l.max_pool);
    if (l.avg_pool) out += fmt::format(" avgpool={}", l.avg_pool);
    if (l.global_avg_pool) out += " gap";
    out += "\n";
  }
  for (const auto& x : exits) {
    out += fmt::format("exit after={}", x.after);
    if (x.avg_pool) out += fmt::format(" avgpool={}", x.avg_pool);
    out += "\n";
  }
  if (!configs.empty()) {
    std::vector<std::string> parts;
    for (const auto& c : configs) parts.push_back(fmt::format("{}", fmt::join(c.groups(), ",")));
    out += fmt::format("configs {}\n", fmt::join(parts, " | "));
  }
  return out;
}

}  // namespace nn
}  // namespace dydnn
