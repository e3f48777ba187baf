#include "binary.h"

#include <dydnn/errors.h>
#include <dydnn/io/artifact.h>
#include <dydnn/version.h>

#include <torch/torch.h>
#include <torch/version.h>
#include <zlib.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <system_error>
#include <unordered_map>

namespace dydnn {
namespace io {

namespace detail {
uint32_t crc32(const void* data, size_t size) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto* p = static_cast<const Bytef*>(data);
  while (size > 0) {  // zlib takes 32-bit lengths
    const auto chunk = static_cast<uInt>(std::min<size_t>(size, 1U << 30));
    crc = ::crc32(crc, p, chunk);
    p += chunk;
    size -= chunk;
  }
  return static_cast<uint32_t>(crc);
}
}  // namespace detail

namespace {

using detail::ByteReader;
using detail::ByteWriter;

// Layout (docs/artifact.md): a 32-byte header, a table of 24-byte section entries,
// then the sections, each starting on a 64-byte boundary.
constexpr std::array<uint8_t, 8> kMagic = {0x89, 'D', 'Y', 'D', 'N', 'N', '\r', '\n'};
constexpr size_t kHeaderBytes = 32;
constexpr size_t kEntryBytes = 24;
constexpr size_t kAlignment = 64;
constexpr uint32_t kMaxSections = 64;
constexpr size_t kMaxSpecBytes = size_t{1} << 20;
constexpr size_t kMaxNameBytes = 1024;
constexpr size_t kMaxTextBytes = size_t{64} << 10;
constexpr int64_t kMaxDims = 8;
// A fuzzing build accepts bad checksums, so that mutated inputs reach the parsers behind
// them (the OSS-Fuzz convention); every other build verifies them.
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
constexpr bool kVerifyChecksums = false;
#else
constexpr bool kVerifyChecksums = true;
#endif

// The sections, in the order they are written. All five are required.
constexpr const char* kSpec = "SPEC";
constexpr const char* kConfigs = "CONF";
constexpr const char* kTensors = "TENS";
constexpr const char* kMeta = "META";
constexpr const char* kPoints = "OPTS";

// "[dydnn.spec] text" -> "text", to re-throw a nested error under this component's name.
std::string without_prefix(const std::string& message) {
  const auto end = message.rfind('[', 0) == 0 ? message.find("] ") : std::string::npos;
  return end == std::string::npos ? message : message.substr(end + 2);
}

bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// ---- tensor dtypes -------------------------------------------------------------

struct DtypeCode {
  uint8_t code;
  torch::Dtype dtype;
  const char* name;
};
constexpr std::array<DtypeCode, 9> kDtypes = {{{1, torch::kFloat32, "float32"},
                                               {2, torch::kFloat64, "float64"},
                                               {3, torch::kFloat16, "float16"},
                                               {4, torch::kBFloat16, "bfloat16"},
                                               {5, torch::kInt64, "int64"},
                                               {6, torch::kInt32, "int32"},
                                               {7, torch::kUInt8, "uint8"},
                                               {8, torch::kInt8, "int8"},
                                               {9, torch::kBool, "bool"}}};

const DtypeCode* find_dtype(uint8_t code) {
  for (const auto& d : kDtypes)
    if (d.code == code) return &d;
  return nullptr;
}

uint8_t code_of(torch::Dtype dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.code;
  dydnn::detail::throw_value_error("io", "cannot store a tensor of dtype {} (valid: float32, float64, float16, "
                                         "bfloat16, int64, int32, uint8, int8, bool)",
                                   c10::toString(dtype));
}

std::string config_names(const std::vector<nn::Config>& configs) {
  std::vector<std::string> names;
  for (const auto c : configs) names.push_back(c.name());
  return fmt::format("{}", fmt::join(names, ", "));
}

// ---- checks shared by save and load --------------------------------------------

void check_consistent(const nn::DynamicNet& net, const data::Normalization& norm, const Metadata& meta,
                      const std::vector<OperatingPoint>& points, const std::string& who) {
  const auto& conn = net->connectivity();
  const auto valid = [&](nn::Config c) { return conn.index_of(c) >= 0; };
  for (const auto& [config, top1] : meta.accuracy) {
    DYDNN_CHECK_VALUE(valid(config), "io", "{}: accuracy given for config {} which the net does not have (valid: {})",
                      who, config.name(), config_names(conn.valid_configs()));
    DYDNN_CHECK_VALUE(std::isfinite(top1) && top1 >= 0 && top1 <= 1, "io",
                      "{}: accuracy {} of config {} is out of range (valid: 0..1)", who, top1, config.name());
  }
  for (const auto* text : {&meta.dydnn_version, &meta.torch_version, &meta.method, &meta.dataset, &meta.created})
    DYDNN_CHECK_VALUE(text->size() <= kMaxTextBytes, "io", "{}: a metadata text of {} bytes (valid: at most {})", who,
                      text->size(), kMaxTextBytes);
  for (const auto& [key, value] : meta.extra)
    DYDNN_CHECK_VALUE(!key.empty() && key.size() <= kMaxNameBytes && value.size() <= kMaxTextBytes, "io",
                      "{}: metadata entry '{}' (valid: a key of 1..{} bytes, a value of at most {} bytes)", who,
                      key.substr(0, 64), kMaxNameBytes, kMaxTextBytes);
  if (!norm.identity()) {
    const auto channels = static_cast<size_t>(net->spec().in_channels);
    DYDNN_CHECK_VALUE(norm.mean.size() == channels && norm.std.size() == channels, "io",
                      "{}: the input normalisation has {} means and {} deviations but the net has {} input channels",
                      who, norm.mean.size(), norm.std.size(), channels);
    for (size_t c = 0; c < channels; ++c)
      DYDNN_CHECK_VALUE(std::isfinite(norm.mean[c]) && std::isfinite(norm.std[c]) && norm.std[c] > 0, "io",
                        "{}: input normalisation of channel {} is mean {}, std {} (valid: finite, std > 0)", who, c,
                        norm.mean[c], norm.std[c]);
  }
  for (size_t k = 0; k < points.size(); ++k) {
    const auto& p = points[k];
    DYDNN_CHECK_VALUE(valid(p.config), "io",
                      "{}: operating point {} is at config {} which the net does not have (valid: {})", who, k,
                      p.config.name(), config_names(conn.valid_configs()));
    for (const auto* named : {&p.knobs, &p.metrics})
      for (const auto& entry : *named)
        DYDNN_CHECK_VALUE(!entry.first.empty() && entry.first.size() <= kMaxNameBytes, "io",
                          "{}: operating point {} has a name of {} bytes (valid: 1..{})", who, k, entry.first.size(),
                          kMaxNameBytes);
  }
}

std::string utc_now_iso8601() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// ---- writing -------------------------------------------------------------------

std::vector<std::pair<std::string, torch::Tensor>> named_state(const nn::DynamicNet& net) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : net->named_parameters(true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : net->named_buffers(true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::string tensors_section(const nn::DynamicNet& net) {
  const auto state = named_state(net);
  std::vector<torch::Tensor> cpu;
  for (const auto& [name, t] : state) cpu.push_back(t.detach().to(torch::kCPU).contiguous());
  // The index first (with each blob's offset), then the blobs, each 64-byte aligned.
  size_t index_bytes = 4;
  for (size_t k = 0; k < state.size(); ++k) index_bytes += 4 + state[k].first.size() + 2 + 8 * cpu[k].dim() + 16;
  size_t offset = (index_bytes + kAlignment - 1) / kAlignment * kAlignment;
  ByteWriter w;
  w.u32(static_cast<uint32_t>(state.size()));
  for (size_t k = 0; k < state.size(); ++k) {
    const auto& t = cpu[k];
    w.str(state[k].first);
    w.u8(code_of(t.scalar_type()));
    w.u8(static_cast<uint8_t>(t.dim()));
    for (const auto d : t.sizes()) w.i64(d);
    const size_t nbytes = t.numel() * t.element_size();
    w.u64(offset);
    w.u64(nbytes);
    offset = (offset + nbytes + kAlignment - 1) / kAlignment * kAlignment;
  }
  for (const auto& t : cpu) {
    w.pad_to(kAlignment);
    w.bytes(t.data_ptr(), t.numel() * t.element_size());
  }
  return std::move(w.buffer());
}

std::string configs_section(const nn::DynamicNet& net) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(net->configs().size()));
  for (const auto c : net->configs()) w.u64(c.mask());
  return std::move(w.buffer());
}

std::string meta_section(const Metadata& m, const data::Normalization& norm) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(norm.mean.size()));
  for (const auto* values : {&norm.mean, &norm.std})
    for (const double v : *values) w.f64(v);
  for (const auto* text : {&m.dydnn_version, &m.torch_version, &m.method, &m.dataset, &m.created}) w.str(*text);
  w.u32(static_cast<uint32_t>(m.accuracy.size()));
  for (const auto& [config, top1] : m.accuracy) {
    w.u64(config.mask());
    w.f64(top1);
  }
  w.u32(static_cast<uint32_t>(m.extra.size()));
  for (const auto& [key, value] : m.extra) {
    w.str(key);
    w.str(value);
  }
  return std::move(w.buffer());
}

void write_named(ByteWriter& w, const std::map<std::string, double>& values) {
  w.u32(static_cast<uint32_t>(values.size()));
  for (const auto& [name, value] : values) {
    w.str(name);
    w.f64(value);
  }
}

std::string points_section(const std::vector<OperatingPoint>& points) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(points.size()));
  for (const auto& p : points) {
    w.u64(p.config.mask());
    write_named(w, p.knobs);
    write_named(w, p.metrics);
  }
  return std::move(w.buffer());
}

// ---- reading -------------------------------------------------------------------

struct Section {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

std::map<std::string, Section> read_container(const uint8_t* data, size_t size, const std::string& source,
                                              uint32_t& version) {
  ByteReader header(data, size, source);
  if (size == 0) header.fail("the file is empty (not a dydnn model file)");
  if (size < kMagic.size() || std::memcmp(data, kMagic.data(), kMagic.size()) != 0)
    header.fail("not a dydnn model file (wrong magic bytes; expected \\x89DYDNN\\r\\n)");
  if (size < kHeaderBytes) header.fail("truncated: {} bytes, shorter than the {}-byte header", size, kHeaderBytes);
  header.u64();  // magic
  version = header.u32();
  if (version == 0) header.fail("format version 0 is not valid");
  if (version > kArtifactFormatVersion)
    header.fail("format version {} is newer than this dydnn ({}) reads (up to {}); upgrade dydnn", version,
                DYDNN_VERSION_STRING, kArtifactFormatVersion);
  const uint32_t count = header.u32();
  const uint64_t declared_size = header.u64();
  const uint32_t table_crc = header.u32();
  header.u32();  // reserved
  if (declared_size != size)
    header.fail("{}: the header says {} bytes but the file has {}",
                declared_size > size ? "truncated" : "trailing bytes", declared_size, size);
  if (count > kMaxSections) header.fail("{} sections (valid: at most {})", count, kMaxSections);
  if (kHeaderBytes + count * kEntryBytes > size) header.fail("truncated: the section table runs past the end");
  std::string covered(reinterpret_cast<const char*>(data), 24);
  covered.append(reinterpret_cast<const char*>(data) + kHeaderBytes, count * kEntryBytes);
  if (detail::crc32(covered.data(), covered.size()) != table_crc && kVerifyChecksums)
    header.fail("the header or section table is corrupt (CRC-32 mismatch)");

  ByteReader table(data + kHeaderBytes, count * kEntryBytes, source + ": section table");
  std::map<std::string, Section> sections;
  for (uint32_t k = 0; k < count; ++k) {
    std::string tag(4, ' ');
    for (auto& ch : tag) ch = static_cast<char>(table.u8());
    const uint32_t crc = table.u32();
    const uint64_t offset = table.u64();
    const uint64_t length = table.u64();
    const std::string name = std::all_of(tag.begin(), tag.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; })
                                 ? tag
                                 : fmt::format("#{}", k);
    if (offset % kAlignment != 0 || offset < kHeaderBytes + count * kEntryBytes || offset > size ||
        length > size - offset)
      header.fail("section {} lies outside the file (offset {}, {} bytes, file {} bytes)", name, offset, length, size);
    if (detail::crc32(data + offset, length) != crc && kVerifyChecksums)
      header.fail("section {} is corrupt (CRC-32 mismatch): the file was damaged after it was written", name);
    if (!sections.emplace(tag, Section{data + offset, length}).second) header.fail("section {} appears twice", name);
  }
  for (const char* required : {kSpec, kConfigs, kTensors, kMeta, kPoints})
    if (!sections.count(required)) header.fail("section {} is missing", required);
  return sections;
}

nn::Config read_config(ByteReader& r, int64_t groups, const char* field) {
  const uint64_t mask = r.u64();
  const uint64_t all = groups >= 64 ? ~uint64_t{0} : (uint64_t{1} << groups) - 1;
  if (mask == 0 || (mask & ~all) != 0)
    r.fail("{} has group mask {:#x}, which is not a config of {} groups", field, mask, groups);
  return nn::Config(mask);
}

// An upper bound on the numbers a net built from `spec` allocates: dense weights, every
// bias variant, BN's exact statistics sets and the heads. The loader compares it with
// the numbers the file holds before building anything, so a hostile spec cannot make
// it allocate more than the file justifies.
double state_numel_bound(const nn::NetSpec& spec) {
  const auto conn = spec.make_connectivity();
  const double groups = static_cast<double>(spec.groups);
  double total = 0, in = static_cast<double>(spec.in_channels);
  int64_t h = spec.height, w = spec.width;
  bool flat = false;
  for (const auto& layer : spec.layers) {
    const double out = static_cast<double>(layer.channels);
    if (layer.kind == nn::LayerKind::Linear) {
      if (!flat) in *= static_cast<double>(h) * static_cast<double>(w);
      flat = true;
      total += in * out + out * (groups + 1);
      in = out;
      continue;
    }
    total += in * out * static_cast<double>(layer.kernel) * static_cast<double>(layer.kernel) + out * (groups + 1);
    if (layer.batch_norm) {
      const auto sizes = spec.group_spec(layer);
      for (int64_t j = 0; j < sizes.num_groups(); ++j) {
        std::set<uint64_t> contexts;
        for (const auto c : conn.valid_configs())
          if (c.contains(j)) contexts.insert(conn.context_of(j, c).mask());
        total += 4.0 * static_cast<double>(sizes.size(j)) * static_cast<double>(contexts.size());
      }
    }
    h = (h + 2 * layer.padding - layer.kernel) / layer.stride + 1;
    w = (w + 2 * layer.padding - layer.kernel) / layer.stride + 1;
    const int64_t pool = std::max(layer.max_pool, layer.avg_pool);
    if (pool > 0) h /= pool, w /= pool;
    if (layer.global_avg_pool) h = w = 1;
    in = out;
  }
  const double features = flat ? in : in * static_cast<double>(h) * static_cast<double>(w);
  const double heads = spec.head == nn::HeadKind::PerConfig ? static_cast<double>(conn.valid_configs().size()) : 1.0;
  const double classes = static_cast<double>(spec.classes);
  return total + heads * (features * classes + classes * (groups + 1));
}

struct TensorRecord {
  std::string name;
  const DtypeCode* dtype = nullptr;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
};

std::vector<TensorRecord> read_tensor_index(const Section& s, const std::string& what, double& numel_total) {
  ByteReader r(s.data, s.size, what);
  // Each record takes at least 4 (name length) + 2 + 16 bytes.
  const uint64_t count = r.count(22, "the tensor count");
  std::vector<TensorRecord> out;
  out.reserve(count);
  std::set<std::string> names;
  numel_total = 0;
  for (uint64_t k = 0; k < count; ++k) {
    TensorRecord t;
    t.name = r.str(kMaxNameBytes, "a tensor name");
    if (t.name.empty() || !names.insert(t.name).second)
      r.fail("tensor {} has {} name '{}'", k, t.name.empty() ? "an empty" : "a repeated", t.name);
    const uint8_t code = r.u8();
    t.dtype = find_dtype(code);
    if (!t.dtype) r.fail("tensor '{}' has unknown dtype code {}", t.name, code);
    const int64_t ndim = r.u8();
    if (ndim > kMaxDims) r.fail("tensor '{}' has {} dimensions (valid: at most {})", t.name, ndim, kMaxDims);
    uint64_t numel = 1;
    for (int64_t d = 0; d < ndim; ++d) {
      const int64_t size = r.i64();
      if (size < 0 || static_cast<uint64_t>(size) > s.size)
        r.fail("tensor '{}' has dimension {} of size {} (valid: 0..{})", t.name, d, size, s.size);
      t.shape.push_back(size);
      numel = size == 0 ? 0 : (numel > s.size / static_cast<uint64_t>(size) ? s.size + 1 : numel * size);
    }
    const uint64_t offset = r.u64();
    const uint64_t nbytes = r.u64();
    const uint64_t element = c10::elementSize(t.dtype->dtype);
    if (numel > s.size || numel * element != nbytes)
      r.fail("tensor '{}' of shape [{}] and dtype {} needs {} bytes but its record says {}", t.name,
             fmt::join(t.shape, ", "), t.dtype->name, numel > s.size ? "more than the section's" : std::to_string(numel * element),
             nbytes);
    if (offset % kAlignment != 0 || offset > s.size || nbytes > s.size - offset)
      r.fail("tensor '{}' lies outside the section (offset {}, {} bytes, section {} bytes)", t.name, offset, nbytes,
             s.size);
    t.data = s.data + offset;
    t.nbytes = nbytes;
    numel_total += static_cast<double>(numel);
    out.push_back(std::move(t));
  }
  if (!out.empty() && r.position() > static_cast<size_t>(out.front().data - s.data))
    r.fail("the tensor index overlaps the tensor data");
  return out;
}

void load_tensors(nn::DynamicNet& net, const std::vector<TensorRecord>& records, const std::string& what) {
  auto fail = [&](auto&&... args) {
    dydnn::detail::throw_value_error("io", "{}: {}", what, fmt::format(std::forward<decltype(args)>(args)...));
  };
  std::unordered_map<std::string, const TensorRecord*> by_name;
  for (const auto& r : records) by_name[r.name] = &r;
  // A net saved in another floating dtype (float64 after `.double()`) is converted first;
  // the first parameter tells which.
  const auto parameters = net->named_parameters(true);
  if (parameters.size() > 0) {
    const auto it = by_name.find(parameters[0].key());
    if (it != by_name.end() && it->second->dtype->dtype != parameters[0].value().scalar_type() &&
        c10::isFloatingType(it->second->dtype->dtype))
      net->to(it->second->dtype->dtype);
  }
  const auto state = named_state(net);
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : state) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) fail("tensor '{}' that the spec needs is missing", name);
    const TensorRecord& r = *it->second;
    if (r.dtype->dtype != tensor.scalar_type())
      fail("tensor '{}' is {} but the net holds {}", name, r.dtype->name, c10::toString(tensor.scalar_type()));
    if (tensor.sizes() != c10::IntArrayRef(r.shape))
      fail("tensor '{}' has shape [{}] but the spec needs [{}]", name, fmt::join(r.shape, ", "),
           fmt::join(tensor.sizes(), ", "));
    // Blocks can be views into a packed storage, so copy by shape rather than by bytes.
    tensor.copy_(torch::from_blob(const_cast<uint8_t*>(r.data), r.shape, torch::TensorOptions().dtype(r.dtype->dtype)));
    by_name.erase(it);
  }
  if (!by_name.empty()) fail("tensor '{}' is not part of the spec's net", by_name.begin()->first);
  net->invalidate_caches();
}

Metadata read_meta(const Section& s, const std::string& what, int64_t groups, data::Normalization& norm) {
  ByteReader r(s.data, s.size, what);
  Metadata m;
  const uint64_t channels = r.count(16, "the normalisation channel count");
  for (auto* values : {&norm.mean, &norm.std})
    for (uint64_t c = 0; c < channels; ++c) values->push_back(r.f64());
  for (auto* text : {&m.dydnn_version, &m.torch_version, &m.method, &m.dataset, &m.created})
    *text = r.str(kMaxTextBytes, "a metadata text");
  const uint64_t n_accuracy = r.count(16, "the accuracy count");
  for (uint64_t k = 0; k < n_accuracy; ++k) {
    const auto config = read_config(r, groups, "an accuracy entry");
    if (!m.accuracy.emplace(config, r.f64()).second) r.fail("config {} has two accuracy entries", config.name());
  }
  const uint64_t n_extra = r.count(8, "the entry count");
  for (uint64_t k = 0; k < n_extra; ++k) {
    auto key = r.str(kMaxNameBytes, "an entry key");
    auto value = r.str(kMaxTextBytes, "an entry value");
    if (!m.extra.emplace(std::move(key), std::move(value)).second) r.fail("metadata entry repeated");
  }
  return m;
}

std::map<std::string, double> read_named(ByteReader& r) {
  std::map<std::string, double> out;
  const uint64_t n = r.count(12, "a name count");
  for (uint64_t k = 0; k < n; ++k) {
    auto name = r.str(kMaxNameBytes, "a name");
    const double value = r.f64();
    if (!out.emplace(name, value).second) r.fail("the name '{}' appears twice in one operating point", name);
  }
  return out;
}

std::vector<OperatingPoint> read_points(const Section& s, const std::string& what, int64_t groups) {
  ByteReader r(s.data, s.size, what);
  const uint64_t n = r.count(16, "the operating point count");
  std::vector<OperatingPoint> out(n);
  for (auto& p : out) {
    p.config = read_config(r, groups, "an operating point");
    p.knobs = read_named(r);
    p.metrics = read_named(r);
  }
  return out;
}

[[noreturn]] void rethrow_as_value_error(const std::string& source) {
  try {
    throw;
  } catch (const ValueError&) {
    throw;
  } catch (const IndexError& e) {
    dydnn::detail::throw_value_error("io", "{}: {}", source, without_prefix(e.what()));
  } catch (const c10::Error& e) {
    dydnn::detail::throw_value_error("io", "{}: {}", source, e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    dydnn::detail::throw_value_error("io", "{}: out of memory while loading", source);
  }
}

Artifact parse(const uint8_t* data, size_t size, const std::string& source) {
  uint32_t version = 0;
  const auto sections = read_container(data, size, source, version);
  const auto where = [&](const char* tag) { return fmt::format("{}: section {}", source, tag); };

  const Section& spec_bytes = sections.at(kSpec);
  if (spec_bytes.size > kMaxSpecBytes)
    dydnn::detail::throw_value_error("io", "{}: {} bytes (valid: at most {})", where(kSpec), spec_bytes.size,
                                     kMaxSpecBytes);
  nn::NetSpec spec;
  try {
    spec = nn::NetSpec::parse(std::string(reinterpret_cast<const char*>(spec_bytes.data), spec_bytes.size),
                              where(kSpec));
  } catch (const ValueError& e) {
    dydnn::detail::throw_value_error("io", "{}", without_prefix(e.what()));
  }

  {  // The valid configs: each must be one the spec allows.
    ByteReader r(sections.at(kConfigs).data, sections.at(kConfigs).size, where(kConfigs));
    const auto allowed = spec.make_connectivity();
    const uint64_t n = r.count(8, "the config count");
    if (n == 0) r.fail("no config (a model needs at least one)");
    std::vector<nn::Config> configs;
    for (uint64_t k = 0; k < n; ++k) {
      const auto c = read_config(r, spec.groups, "a config");
      if (allowed.index_of(c) < 0)
        r.fail("config {} is not allowed by the spec's {} connectivity (valid: {})", c.name(), spec.connectivity,
               config_names(allowed.valid_configs()));
      if (std::find(configs.begin(), configs.end(), c) != configs.end()) r.fail("config {} appears twice", c.name());
      configs.push_back(c);
    }
    if (configs != allowed.valid_configs()) spec.configs = configs;
  }

  double numel_total = 0;
  const auto records = read_tensor_index(sections.at(kTensors), where(kTensors), numel_total);
  const double bound = state_numel_bound(spec);
  if (bound > static_cast<double>(spec.groups) * numel_total + double(1 << 20))
    dydnn::detail::throw_value_error("io", "{}: the spec describes a net of up to {:.3g} numbers but the file holds "
                                           "only {:.3g}",
                                     where(kTensors), bound, numel_total);

  Artifact out;
  out.net = nn::DynamicNet(spec);
  load_tensors(out.net, records, where(kTensors));
  out.net->eval();
  out.metadata = read_meta(sections.at(kMeta), where(kMeta), spec.groups, out.normalization);
  out.metadata.format_version = version;
  out.operating_points = read_points(sections.at(kPoints), where(kPoints), spec.groups);
  check_consistent(out.net, out.normalization, out.metadata, out.operating_points, source);
  return out;
}

}  // namespace

std::string to_bytes(const Artifact& artifact) {
  DYDNN_CHECK_VALUE(!artifact.net.is_empty(), "io", "save: the artifact has no net");
  DYDNN_CHECK_VALUE(host_is_little_endian(), "io", "save: big-endian hosts are not supported");
  Metadata meta = artifact.metadata;
  if (meta.dydnn_version.empty()) meta.dydnn_version = DYDNN_VERSION_STRING;
  if (meta.torch_version.empty()) meta.torch_version = TORCH_VERSION;
  if (meta.created.empty()) meta.created = utc_now_iso8601();
  check_consistent(artifact.net, artifact.normalization, meta, artifact.operating_points, "save");

  const std::vector<std::pair<const char*, std::string>> sections = {
      {kSpec, artifact.net->spec().to_text()},
      {kConfigs, configs_section(artifact.net)},
      {kTensors, tensors_section(artifact.net)},
      {kMeta, meta_section(meta, artifact.normalization)},
      {kPoints, points_section(artifact.operating_points)}};
  const size_t table_end = kHeaderBytes + sections.size() * kEntryBytes;
  const auto align = [](size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; };
  ByteWriter table;
  size_t file_size = table_end;
  for (const auto& [tag, bytes] : sections) {
    const size_t offset = align(file_size);
    table.bytes(tag, 4);
    table.u32(detail::crc32(bytes.data(), bytes.size()));
    table.u64(offset);
    table.u64(bytes.size());
    file_size = offset + bytes.size();
  }
  ByteWriter w;
  w.bytes(kMagic.data(), kMagic.size());
  w.u32(kArtifactFormatVersion);
  w.u32(static_cast<uint32_t>(sections.size()));
  w.u64(file_size);
  std::string covered = w.buffer() + table.buffer();
  w.u32(detail::crc32(covered.data(), covered.size()));
  w.u32(0);
  w.bytes(table.buffer().data(), table.size());
  for (const auto& [tag, bytes] : sections) {
    w.pad_to(kAlignment);
    w.bytes(bytes.data(), bytes.size());
  }
  DYDNN_CHECK_VALUE(w.size() == file_size, "io", "save: internal layout error ({} != {} bytes)", w.size(), file_size);
  return std::move(w.buffer());
}

Artifact from_bytes(const void* data, size_t size, const std::string& source) {
  DYDNN_CHECK_VALUE(host_is_little_endian(), "io", "load: big-endian hosts are not supported");
  try {
    return parse(static_cast<const uint8_t*>(data), size, source);
  } catch (...) {
    rethrow_as_value_error(source);
  }
}

void save(const Artifact& artifact, const std::string& path) {
  DYDNN_CHECK_VALUE(!path.empty(), "io", "save: empty path");
  const std::string bytes = to_bytes(artifact);
  namespace fs = std::filesystem;
  std::error_code ec;
  DYDNN_CHECK_VALUE(!fs::is_directory(path, ec), "io", "save: '{}' is a directory (give a file name)", path);
  // The temporary file sits next to the target so the rename cannot cross file systems.
  const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
  const auto fail = [&](const char* step, int error) {
    fs::remove(tmp, ec);
    dydnn::detail::throw_value_error("io", "save: could not {} '{}' ({}); any previous file there is unchanged", step,
                                     path, std::strerror(error));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("create a temporary file for", errno);
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = n < 0 ? errno : ENOSPC;
      ::close(fd);
      fail("write", error);
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    fail("flush", error);
  }
  if (::close(fd) != 0) fail("close", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("rename the temporary file to", errno);
  // Persist the rename itself; best effort (some file systems refuse to open directories).
  const auto parent = fs::path(path).parent_path();
  const int dir = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void save(nn::DynamicNet net, const std::string& path, Metadata metadata) {
  Artifact artifact;
  artifact.net = std::move(net);
  artifact.metadata = std::move(metadata);
  save(artifact, path);
}

Artifact load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  DYDNN_CHECK_VALUE(!path.empty(), "io", "load: empty path");
  DYDNN_CHECK_VALUE(fs::exists(path, ec), "io", "load: '{}' does not exist", path);
  DYDNN_CHECK_VALUE(!fs::is_directory(path, ec), "io", "load: '{}' is a directory, not a model file", path);
  std::ifstream in(path, std::ios::binary);
  DYDNN_CHECK_VALUE(in.good(), "io", "load: cannot open '{}' ({})", path, std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  DYDNN_CHECK_VALUE(!in.bad(), "io", "load: cannot read '{}' ({})", path, std::strerror(errno));
  return from_bytes(bytes.data(), bytes.size(), path);
}

std::string describe(const Artifact& a) {
  const auto& net = a.net;
  const auto& spec = net->spec();
  const auto& m = a.metadata;
  const auto or_dash = [](const std::string& s) { return s.empty() ? std::string("-") : s; };
  std::string out = fmt::format("dydnn model, format {}\n", m.format_version);
  out += fmt::format("  written by dydnn {} (torch {}), created {}\n", or_dash(m.dydnn_version),
                     or_dash(m.torch_version), or_dash(m.created));
  out += fmt::format("  trained with {} on {}\n", or_dash(m.method), or_dash(m.dataset));
  if (!a.normalization.identity())
    out += fmt::format("  input normalised with mean [{:.4f}], std [{:.4f}]\n", fmt::join(a.normalization.mean, ", "),
                       fmt::join(a.normalization.std, ", "));
  out += fmt::format("spec '{}': input {}x{}x{}, {} classes, {} groups, {} connectivity, {} feature layers + {} head\n",
                     spec.name, spec.in_channels, spec.height, spec.width, spec.classes, spec.groups,
                     spec.connectivity, spec.layers.size(), nn::to_string(spec.head));
  out += fmt::format("{:<10} {:>11} {:>9} {:>8}\n", "config", "parameters", "MFLOPs", "top-1");
  for (const auto c : net->configs()) {
    const auto it = m.accuracy.find(c);
    out += fmt::format("{:<10} {:>11} {:>9.3f} {:>8}\n", c.name(), net->parameter_count(c), 2e-6 * net->macs(c),
                       it == m.accuracy.end() ? std::string("-") : fmt::format("{:.2f}%", 100 * it->second));
  }
  if (a.operating_points.empty()) {
    out += "operating points: none (profile the model to add them)\n";
  } else {
    out += fmt::format("operating points: {}\n", a.operating_points.size());
    for (const auto& p : a.operating_points) {
      std::vector<std::string> parts;
      for (const auto& [k, v] : p.knobs) parts.push_back(fmt::format("{}={:g}", k, v));
      parts.push_back("|");
      for (const auto& [k, v] : p.metrics) parts.push_back(fmt::format("{}={:g}", k, v));
      out += fmt::format("  {:<10} {}\n", p.config.name(), fmt::join(parts, " "));
    }
  }
  for (const auto& [key, value] : m.extra) out += fmt::format("  {} = {}\n", key, value);
  return out;
}

}  // namespace io
}  // namespace dydnn
