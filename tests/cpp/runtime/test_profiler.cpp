// The profiler: every config under every setting, metrics and knobs, restoration of the
// thread count and CPU set, the table in the artifact, and the selector reading it.
#include <dydnn/io/artifact.h>
#include <dydnn/runtime/profiler.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <unistd.h>

namespace {

using namespace dydnn;

nn::NetSpec tiny() {
  return nn::NetSpec::parse(
      "dydnn-spec 1\nname tiny\ninput 1 8 8\nclasses 4\ngroups 2\nconnectivity incremental\n"
      "conv 8 kernel=3 padding=1 bn relu maxpool=2\nconv 8 kernel=3 padding=1 bn relu maxpool=2\n");
}

data::ImageDataset tiny_data(int64_t n) {
  torch::manual_seed(3);
  return {torch::randint(0, 256, {n, 1, 8, 8}, torch::kLong).to(torch::kUInt8), torch::randint(0, 4, {n})};
}

}  // namespace

TEST_CASE("the profiler measures every config under every setting and restores them", "[runtime][profiler]") {
  nn::DynamicNet net(tiny());
  const auto data = tiny_data(40);
  runtime::ProfileOptions o;
  o.threads = {1, 2};
  const bool two_cpus = sysconf(_SC_NPROCESSORS_ONLN) >= 2;
  if (two_cpus) o.core_sets = {{0}, {0, 1}};
  o.warmup = 1;
  o.repetitions = 5;
  o.progress = false;
  double joules = 0;
  o.energy = [&] { return joules += 0.001; };  // 1 mJ per reading
  const int threads_before = torch::get_num_threads();
  const auto cpus_before = runtime::allowed_cpus();
  const auto table = runtime::profile(net, data, data::Normalization{}, o);
  CHECK(torch::get_num_threads() == threads_before);
  CHECK((runtime::allowed_cpus() == cpus_before));
  const size_t settings = 2 * (two_cpus ? 2 : 1);
  REQUIRE(table.size() == settings * net->configs().size());
  for (const auto& p : table) {
    CHECK(p.metrics.at(io::metric::kLatencyP50Us) > 0);
    CHECK(p.metrics.at(io::metric::kLatencyP95Us) >= p.metrics.at(io::metric::kLatencyP50Us));
    CHECK(p.metrics.at(io::metric::kTop1) >= 0);
    CHECK(p.metrics.at(io::metric::kEnergyMj) == Approx(1.0 / 5));  // 1 mJ over 5 repetitions
    CHECK(p.knobs.count("threads") == 1);
    if (two_cpus) CHECK(p.knobs.count("cores") == 1);
  }
  // Accuracy does not depend on the setting.
  CHECK(table[0].metrics.at(io::metric::kTop1) == table[net->configs().size()].metrics.at(io::metric::kTop1));

  // The table travels in the artifact and feeds the selector.
  io::Artifact a;
  a.net = net;
  a.operating_points = table;
  const auto bytes = io::to_bytes(a);
  const auto loaded = io::from_bytes(bytes.data(), bytes.size());
  REQUIRE((loaded.operating_points == table));
  runtime::Selector selector(runtime::to_points(loaded.operating_points));
  CHECK(selector.points().size() == table.size());
  CHECK(selector.decide({}, runtime::Objective::MaxAccuracy, 0).feasible);
}

TEST_CASE("the profiler refuses bad sweeps", "[runtime][profiler]") {
  nn::DynamicNet net(tiny());
  const auto data = tiny_data(8);
  runtime::ProfileOptions o;
  o.progress = false;
  o.threads = {0};
  CHECK_THROWS_WITH(runtime::profile(net, data, {}, o), Catch::Contains("thread count 0 (valid: >= 1)"));
  o.threads = {1};
  o.core_sets = {{4096}};
  CHECK_THROWS_WITH(runtime::profile(net, data, {}, o), Catch::Contains("core 4096"));
  o.core_sets = {};
  o.domains = {"policy0"};
  CHECK_THROWS_WITH(runtime::profile(net, data, {}, o), Catch::Contains("without a DvfsBackend"));
}
