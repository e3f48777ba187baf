// The model artifact: bitwise round trips for every connectivity and head, metadata and
// operating points, every kind of bad file, and atomic saves (a failed write keeps the
// previous file).
#include <dydnn/io/artifact.h>
#include <dydnn/version.h>

#include <catch2/catch.hpp>
#include <torch/version.h>
#include <zlib.h>

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace {

using dydnn::ValueError;
using dydnn::io::Artifact;
using dydnn::nn::Config;
using dydnn::nn::DynamicNet;
using dydnn::nn::NetSpec;
namespace fs = std::filesystem;

NetSpec spec_of(const std::string& connectivity, const std::string& head, int64_t channels = 8) {
  return NetSpec::parse(fmt::format("dydnn-spec 1\nname t\ninput 1 8 8\nclasses 4\ngroups 4\nconnectivity {}\n"
                                    "head {}\nconv {} kernel=3 padding=1 bn relu maxpool=2\nconv 16 kernel=3 "
                                    "padding=1 bn relu maxpool=2\nlinear 8 relu\n",
                                    connectivity, head, channels));
}

// A net with non-trivial weights and BN statistics (one training-mode pass per config).
DynamicNet trained_net(const NetSpec& spec, uint64_t seed = 1) {
  torch::manual_seed(seed);
  DynamicNet net(spec);
  net->train();
  for (const auto c : net->configs()) net->forward(torch::randn({6, 1, 8, 8}), c);
  net->eval();
  return net;
}

Artifact artifact_of(DynamicNet net) {
  Artifact a;
  a.net = net;
  a.normalization = {{0.25}, {0.5}};
  a.metadata.method = "incremental";
  a.metadata.dataset = "tiny";
  a.metadata.created = "2026-11-23T00:00:00Z";
  a.metadata.accuracy[net->configs().front()] = 0.75;
  a.metadata.extra["run"] = "7";
  a.operating_points.push_back({net->configs().back(), {{"threads", 2}}, {{"latency_p50_us", 123.5}}});
  return a;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

uint32_t u32_at(const std::string& b, size_t at) {
  uint32_t v = 0;
  for (int k = 0; k < 4; ++k) v |= static_cast<uint32_t>(static_cast<uint8_t>(b[at + k])) << (8 * k);
  return v;
}
uint64_t u64_at(const std::string& b, size_t at) { return u32_at(b, at) | (uint64_t{u32_at(b, at + 4)} << 32); }
void put_u32(std::string& b, size_t at, uint32_t v) {
  for (int k = 0; k < 4; ++k) b[at + k] = static_cast<char>((v >> (8 * k)) & 0xFF);
}
void put_u64(std::string& b, size_t at, uint64_t v) {
  put_u32(b, at, static_cast<uint32_t>(v));
  put_u32(b, at + 4, static_cast<uint32_t>(v >> 32));
}

uint32_t crc(const std::string& s) { return static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(s.data()), s.size())); }

// Rebuilds a file with one section's payload replaced (checksums recomputed), as a
// writer with a bug, or a hand-edited file, would produce: the loader must catch what
// the checksums cannot.
std::string with_section(const std::string& file, const std::string& tag, const std::string& payload) {
  const uint32_t count = u32_at(file, 12);
  std::vector<std::pair<std::string, std::string>> sections;
  for (uint32_t k = 0; k < count; ++k) {
    const size_t e = 32 + 24 * k;
    const std::string t = file.substr(e, 4);
    sections.emplace_back(t, t == tag ? payload : file.substr(u64_at(file, e + 8), u64_at(file, e + 16)));
  }
  std::string header = file.substr(0, 32), table, body;
  size_t end = 32 + 24 * count;
  for (const auto& [t, bytes] : sections) {
    const size_t offset = (end + 63) / 64 * 64;
    std::string entry = t + std::string(20, '\0');
    put_u32(entry, 4, crc(bytes));
    put_u64(entry, 8, offset);
    put_u64(entry, 16, bytes.size());
    table += entry;
    body += std::string(offset - end, '\0') + bytes;
    end = offset + bytes.size();
  }
  put_u64(header, 16, end);
  put_u32(header, 24, crc(header.substr(0, 24) + table));
  return header + table + body;
}

std::string section(const std::string& file, const std::string& tag) {
  for (uint32_t k = 0; k < u32_at(file, 12); ++k) {
    const size_t e = 32 + 24 * k;
    if (file.substr(e, 4) == tag) return file.substr(u64_at(file, e + 8), u64_at(file, e + 16));
  }
  FAIL("no section " << tag);
  return {};
}

std::string load_error(const std::string& bytes) {
  try {
    dydnn::io::from_bytes(bytes.data(), bytes.size(), "test.dydnn");
  } catch (const ValueError& e) {
    return e.what();
  }
  return "(loaded)";
}

struct TempDir {
  TempDir() : path(fs::temp_directory_path() / fmt::format("dydnn_artifact_{}", ::getpid())) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  fs::path path;
};

}  // namespace

TEST_CASE("an artifact round-trips bitwise at every config, for every connectivity and head", "[io]") {
  for (const auto* connectivity : {"incremental", "prefix", "independent", "fluid islands=0,1/2,3 cross=on",
                                   "fluid islands=0,1/2,3 cross=off"}) {
    for (const auto* head : {"additive", "per_config", "prefix"}) {
      if (std::string(head) == "prefix" && std::string(connectivity) != "prefix") continue;
      INFO(connectivity << ", head " << head);
      auto net = trained_net(spec_of(connectivity, head));
      const auto bytes = dydnn::io::to_bytes(artifact_of(net));
      auto loaded = dydnn::io::from_bytes(bytes.data(), bytes.size());
      CHECK_FALSE(loaded.net->is_training());
      CHECK((loaded.net->configs() == net->configs()));
      torch::NoGradGuard no_grad;
      const auto x = torch::randn({3, 1, 8, 8});
      for (const auto c : net->configs()) CHECK(torch::equal(net->forward(x, c), loaded.net->forward(x, c)));
      // The same artifact saves to the same bytes.
      CHECK(dydnn::io::to_bytes(loaded) == bytes);
    }
  }
}

TEST_CASE("metadata, normalisation and operating points round-trip; save fills in versions and time", "[io]") {
  auto net = trained_net(spec_of("incremental", "additive"));
  Artifact a;
  a.net = net;
  a.metadata.accuracy[Config::prefix(2)] = 0.5;
  const auto bytes = dydnn::io::to_bytes(a);
  const auto loaded = dydnn::io::from_bytes(bytes.data(), bytes.size());
  CHECK(loaded.metadata.format_version == dydnn::io::kArtifactFormatVersion);
  CHECK(loaded.metadata.dydnn_version == DYDNN_VERSION_STRING);
  CHECK(loaded.metadata.torch_version == TORCH_VERSION);
  CHECK(loaded.metadata.created.size() == 20);
  CHECK(loaded.metadata.accuracy.at(Config::prefix(2)) == 0.5);
  CHECK(loaded.normalization.identity());

  const auto full = artifact_of(net);
  const auto bytes2 = dydnn::io::to_bytes(full);
  const auto loaded2 = dydnn::io::from_bytes(bytes2.data(), bytes2.size());
  CHECK((loaded2.normalization.mean == full.normalization.mean));
  CHECK((loaded2.normalization.std == full.normalization.std));
  CHECK(loaded2.metadata.method == "incremental");
  CHECK((loaded2.metadata.extra == full.metadata.extra));
  CHECK((loaded2.operating_points == full.operating_points));
  const auto text = dydnn::io::describe(loaded2);
  CHECK_THAT(text, Catch::Contains("75.00%") && Catch::Contains("latency_p50_us=123.5") && Catch::Contains("run = 7"));
}

TEST_CASE("save refuses metadata that does not fit the net", "[io]") {
  auto a = artifact_of(trained_net(spec_of("incremental", "additive")));
  auto bad = a;
  bad.metadata.accuracy[Config::of({1})] = 0.5;  // B alone is not an incremental config
  CHECK_THROWS_WITH(dydnn::io::to_bytes(bad), Catch::Contains("config B which the net does not have"));
  bad = a;
  bad.metadata.accuracy[Config::prefix(1)] = 1.5;
  CHECK_THROWS_WITH(dydnn::io::to_bytes(bad), Catch::Contains("out of range (valid: 0..1)"));
  bad = a;
  bad.normalization = {{0.1, 0.2}, {1, 1}};
  CHECK_THROWS_WITH(dydnn::io::to_bytes(bad), Catch::Contains("2 means") && Catch::Contains("1 input channels"));
  bad = a;
  bad.normalization = {{0.1}, {0}};
  CHECK_THROWS_WITH(dydnn::io::to_bytes(bad), Catch::Contains("std > 0"));
  bad = a;
  bad.operating_points[0].config = Config::of({2});
  CHECK_THROWS_WITH(dydnn::io::to_bytes(bad), Catch::Contains("operating point 0"));
}

TEST_CASE("bad files are refused with a message naming the problem", "[io]") {
  const auto good = dydnn::io::to_bytes(artifact_of(trained_net(spec_of("incremental", "additive"))));
  CHECK_THAT(load_error(""), Catch::Contains("test.dydnn: the file is empty"));
  CHECK_THAT(load_error("dydnn-spec 1\nname x\n"), Catch::Contains("wrong magic"));
  CHECK_THAT(load_error(good.substr(0, 20)), Catch::Contains("shorter than the 32-byte header"));
  CHECK_THAT(load_error(good.substr(0, good.size() - 1)), Catch::Contains("truncated: the header says"));
  CHECK_THAT(load_error(good + "x"), Catch::Contains("trailing bytes"));

  auto newer = good;
  put_u32(newer, 8, dydnn::io::kArtifactFormatVersion + 1);
  CHECK_THAT(load_error(newer), Catch::Contains("format version 2 is newer") && Catch::Contains("upgrade dydnn"));

  auto flipped = good;
  flipped[good.size() - 3] ^= 0x04;  // inside the last section
  CHECK_THAT(load_error(flipped), Catch::Contains("section OPTS is corrupt (CRC-32 mismatch)"));
  auto flipped_table = good;
  flipped_table[40] ^= 0x01;
  CHECK_THAT(load_error(flipped_table), Catch::Contains("header or section table is corrupt"));

  SECTION("every truncation and many bit flips are refused, none crashes") {
    for (size_t n = 0; n < good.size(); n += (n < 512 ? 1 : 97)) CHECK(load_error(good.substr(0, n)) != "(loaded)");
    for (size_t at = 0; at < good.size(); at += 53) {
      auto b = good;
      b[at] ^= static_cast<char>(1 << (at % 8));
      const auto error = load_error(b);
      // A flip in alignment padding between sections is the only harmless place.
      if (error == "(loaded)") CHECK(good.compare(at, 1, std::string(1, '\0')) == 0);
    }
  }

  SECTION("weights whose shapes do not match the spec") {
    const auto wider = spec_of("incremental", "additive", 12).to_text();
    CHECK_THAT(load_error(with_section(good, "SPEC", wider)),
               Catch::Contains("section TENS") && Catch::Contains("has shape [2, 1, 3, 3] but the spec needs [3, 1, 3, 3]"));
  }
  SECTION("a config the spec does not allow") {
    std::string configs(4, '\0');
    put_u32(configs, 0, 1);
    configs += std::string(8, '\0');
    put_u64(configs, 4, 0b10);  // B alone
    CHECK_THAT(load_error(with_section(good, "CONF", configs)),
               Catch::Contains("config B is not allowed by the spec's incremental connectivity"));
  }
  SECTION("a spec that would need far more memory than the file holds") {
    const auto huge = NetSpec::parse("dydnn-spec 1\nname h\ninput 1 64 64\nclasses 4\ngroups 4\nconnectivity "
                                     "incremental\nconv 1048576 kernel=3\nconv 1048576 kernel=3\n");
    CHECK_THAT(load_error(with_section(good, "SPEC", huge.to_text())),
               Catch::Contains("describes a net of up to") && Catch::Contains("the file holds only"));
  }
  SECTION("a damaged spec") {
    CHECK_THAT(load_error(with_section(good, "SPEC", "dydnn-spec 1\nname x\nbogus 3\n")),
               Catch::Contains("test.dydnn: section SPEC:3: unknown key 'bogus'"));
  }
  SECTION("a missing section") {
    auto b = good;
    b.replace(32 + 24 * 4, 4, "XXXX");  // rename OPTS
    put_u32(b, 24, crc(b.substr(0, 24) + b.substr(32, 24 * 5)));
    CHECK_THAT(load_error(b), Catch::Contains("section OPTS is missing"));
  }
  SECTION("an extra tensor") {
    auto tensors = section(good, "TENS");
    CHECK_THAT(load_error(with_section(good, "TENS", tensors.substr(0, 4) + std::string(60, '\0'))),
               Catch::Contains("section TENS"));
  }
}

TEST_CASE("load names missing files and directories", "[io]") {
  TempDir dir;
  CHECK_THROWS_WITH(dydnn::io::load(dir.file("nope.dydnn")), Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(dydnn::io::load(dir.path.string()), Catch::Contains("is a directory"));
  write_file(dir.file("text.dydnn"), "hello");
  CHECK_THROWS_WITH(dydnn::io::load(dir.file("text.dydnn")), Catch::Contains("text.dydnn: not a dydnn model file"));
}

TEST_CASE("a failed save leaves the previous file intact and no temporary file", "[io]") {
  TempDir dir;
  const auto path = dir.file("model.dydnn");
  auto first = artifact_of(trained_net(spec_of("incremental", "additive"), 1));
  dydnn::io::save(first, path);
  const auto before = read_file(path);
  REQUIRE(dydnn::io::load(path).metadata.extra.at("run") == "7");

  SECTION("the disk is full (a file size limit makes write() fail with EFBIG)") {
    auto second = artifact_of(trained_net(spec_of("incremental", "per_config"), 2));
    struct rlimit old_limit {};
    getrlimit(RLIMIT_FSIZE, &old_limit);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old_limit;
    small.rlim_cur = 4096;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string error;
    try {
      dydnn::io::save(second, path);
    } catch (const ValueError& e) {
      error = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    CHECK_THAT(error, Catch::Contains("could not write") && Catch::Contains("unchanged"));
  }
  SECTION("the directory does not exist") {
    CHECK_THROWS_WITH(dydnn::io::save(first, dir.file("no/such/dir/model.dydnn")),
                      Catch::Contains("could not create a temporary file"));
  }
  SECTION("the target is a directory") {
    fs::create_directories(dir.file("sub"));
    CHECK_THROWS_WITH(dydnn::io::save(first, dir.file("sub")), Catch::Contains("is a directory"));
  }
  CHECK(read_file(path) == before);
  for (const auto& entry : fs::directory_iterator(dir.path))
    CHECK(entry.path().filename().string().find(".tmp") == std::string::npos);
}
