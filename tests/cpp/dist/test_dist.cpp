// Distributed serving: the split of a request over two parts equals the single-process
// forward for every flow; a dispatcher and two device threads over loopback Gloo pairs
// answer like the single-process model; bad options name the value.
#include <dydnn/dist/device.h>
#include <dydnn/dist/dispatcher.h>
#include <dydnn/dist/split_runner.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

using dydnn::dist::ClusterOptions;
using dydnn::dist::Mode;
using dydnn::nn::Config;
using dydnn::nn::DynamicNet;
using dydnn::nn::NetSpec;

namespace {

DynamicNet make_net(const std::string& connectivity, const std::string& head = "per_config") {
  const std::string text = "dydnn-spec 1\nname dist_test\ninput 1 12 12\nclasses 5\ngroups 4\nconnectivity " +
                           connectivity + "\nhead " + head +
                           "\nconv 8 kernel=3 padding=1 bn relu maxpool=2\nconv 8 kernel=3 padding=1 bn relu maxpool=2\n"
                           "linear 8 relu\n";
  torch::manual_seed(3);
  DynamicNet net(NetSpec::parse(text));
  // Non-trivial BN statistics, so that a wrong statistics set would show.
  net->train();
  {
    torch::NoGradGuard g;
    for (const auto& c : net->configs()) net->forward(torch::randn({16, 1, 12, 12}), c);
  }
  net->eval();
  return net;
}

// Both parts in two threads, exchanging layer outputs through a mailbox.
torch::Tensor run_split(DynamicNet& a, DynamicNet& b, const dydnn::dist::Split& split, const torch::Tensor& x) {
  std::mutex m;
  std::condition_variable cv;
  std::map<std::pair<int64_t, int64_t>, torch::Tensor> box;  // (to part, layer)
  auto sender = [&](int64_t to) {
    return [&, to](int64_t k, const torch::Tensor& t) {
      std::lock_guard<std::mutex> l(m);
      box[{to, k}] = t;
      cv.notify_all();
    };
  };
  auto receiver = [&](int64_t me) {
    return [&, me](int64_t k) {
      std::unique_lock<std::mutex> l(m);
      REQUIRE(cv.wait_for(l, std::chrono::seconds(10), [&] { return box.count({me, k}) > 0; }));
      return box[{me, k}];
    };
  };
  torch::Tensor logits;
  std::thread t0([&] {
    c10::InferenceMode im;
    dydnn::dist::run_part(*a, split, 0, x, sender(1), receiver(0));
  });
  {
    c10::InferenceMode im;
    logits = dydnn::dist::run_part(*b, split, 1, x, sender(0), receiver(1));
  }
  t0.join();
  return logits;
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

}  // namespace

TEST_CASE("a split request equals the single-process forward for every flow", "[dist]") {
  struct Case {
    std::string connectivity;
    Mode mode;
    std::string flow;
  };
  for (const auto& c : {Case{"fluid islands=0,1/2,3 cross=off", Mode::HighAccuracy, "late"},
                        Case{"fluid islands=0,1/2,3 cross=on", Mode::HighAccuracy, "cross"},
                        Case{"incremental", Mode::Dynamic, "cross"}, Case{"prefix", Mode::Static, "exchange"}}) {
    INFO(c.connectivity << " mode " << dydnn::dist::to_string(c.mode));
    auto net = make_net(c.connectivity, c.connectivity == "prefix" ? "prefix" : "per_config");
    auto twin = make_net(c.connectivity, c.connectivity == "prefix" ? "prefix" : "per_config");
    const auto split = dydnn::dist::split_for(*net, c.mode);
    CHECK(dydnn::dist::to_string(split.flow) == c.flow);
    const auto x = torch::randn({3, 1, 12, 12});
    torch::Tensor expected;
    {
      c10::InferenceMode im;
      expected = net->forward(x, split.combined);
    }
    const auto got = run_split(net, twin, split, x);
    CHECK(torch::allclose(got, expected, 1e-5, 1e-5));
  }
}

TEST_CASE("splits say what a mode needs", "[dist]") {
  auto inc = make_net("incremental");
  CHECK_THROWS_WITH(dydnn::dist::split_for(*inc, Mode::HighThroughput),
                    Catch::Contains("mode 'ht' needs a fluid model with two islands") && Catch::Contains("incremental"));
  const auto s = dydnn::dist::split_for(*inc, Mode::Dynamic);
  CHECK(s.standalone[0] == Config::of({0, 1}));
  CHECK(s.standalone[1].empty());
  auto fluid = make_net("fluid islands=0,1/2,3 cross=on");
  const auto ht = dydnn::dist::split_for(*fluid, Mode::HighThroughput);
  CHECK(ht.standalone[1] == Config::of({2, 3}));
  CHECK_THROWS_WITH(dydnn::dist::parse_mode("fast"), Catch::Contains("unknown mode 'fast' (valid: ht, ha, static, dynamic)"));
}

TEST_CASE("cluster options name the bad value", "[dist]") {
  ClusterOptions o;
  o.rank = 3;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("rank 3 is out of range for world size 3 (valid: 0..2)"));
  o.rank = 0;
  o.world_size = 5;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("world size 5 (valid: 2 or 3"));
  o.world_size = 3;
  o.master_port = 70000;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("master port 70000 (valid: 1..65535)"));
  setenv("RANK", "x1", 1);
  CHECK_THROWS_WITH(ClusterOptions::from_env(), Catch::Contains("RANK 'x1' (valid: an integer >= 0)"));
  unsetenv("RANK");
}

TEST_CASE("a bind host that is no address of this host is a clear error", "[dist]") {
  setenv("DYDNN_BIND_HOST", "192.0.2.1", 1);  // TEST-NET-1: never one of ours
  ClusterOptions o = ClusterOptions::from_env();
  unsetenv("DYDNN_BIND_HOST");
  CHECK(o.bind_host == "192.0.2.1");
  o.rank = 1;
  o.master_port = free_port();
  CHECK_THROWS_WITH(dydnn::dist::run_device(make_net("fluid islands=0,1/2,3 cross=on"), o),
                    Catch::Contains("rank 1: bind host '192.0.2.1' is no address of this host"));
}

TEST_CASE("an unreachable store is an error after the store timeout, not a hang", "[dist]") {
  ClusterOptions o;
  o.master_port = free_port();  // nobody listens there
  o.rank = 1;
  o.store_timeout_ms = 300;
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(dydnn::dist::run_device(make_net("fluid islands=0,1/2,3 cross=on"), o),
                    Catch::Contains("cannot reach the store at 127.0.0.1:"));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("a dispatcher and two device threads answer like the single-process model", "[dist]") {
  for (const auto mode : {Mode::HighThroughput, Mode::HighAccuracy}) {
    INFO("mode " << dydnn::dist::to_string(mode));
    auto net = make_net("fluid islands=0,1/2,3 cross=on");
    ClusterOptions o;
    o.master_port = free_port();
    dydnn::dist::Dispatcher dispatcher(net, mode, o);
    std::vector<std::thread> devices;
    std::vector<int> results(2, -1);
    // Built here: make_net seeds torch's global generator, which threads would interleave.
    std::vector<DynamicNet> device_nets{make_net("fluid islands=0,1/2,3 cross=on"), make_net("fluid islands=0,1/2,3 cross=on")};
    for (int64_t r = 1; r <= 2; ++r) {
      devices.emplace_back([&, r] {
        ClusterOptions d = o;
        d.rank = r;
        try {
          results[static_cast<size_t>(r - 1)] = dydnn::dist::run_device(device_nets[static_cast<size_t>(r - 1)], d);
        } catch (const std::exception&) {
          results[static_cast<size_t>(r - 1)] = -2;
        }
      });
    }
    REQUIRE(dispatcher.wait_for_devices(2, std::chrono::seconds(20)));
    const int64_t n = 40;
    const auto x = torch::randn({n, 1, 12, 12});
    for (int64_t i = 0; i < n; ++i) dispatcher.submit(i, x[i]);
    CHECK_THROWS_WITH(dispatcher.submit(100, torch::zeros({1, 13, 12})),
                      Catch::Contains("request 100: input of shape [1, 13, 12] (valid: [1, 12, 12]"));
    CHECK_THROWS_WITH(dispatcher.submit(3, x[3]), Catch::Contains("request id 3 was already submitted"));
    std::map<int64_t, int> seen;
    for (int64_t k = 0; k < n; ++k) {
      auto a = dispatcher.next_answer(std::chrono::seconds(20));
      REQUIRE(a.has_value());
      REQUIRE(a->error.empty());
      ++seen[a->id];
      const Config c = Config::parse(a->config, 4);
      if (mode == Mode::HighAccuracy) CHECK(c == Config::of({0, 1, 2, 3}));
      c10::InferenceMode im;
      const auto expected = net->forward(x[a->id].unsqueeze(0), c).squeeze(0);
      CHECK(torch::allclose(a->logits, expected, 1e-5, 1e-5));
    }
    CHECK(seen.size() == static_cast<size_t>(n));
    CHECK_FALSE(dispatcher.next_answer(std::chrono::milliseconds(100)).has_value());
    const auto stats = dispatcher.stats();
    CHECK(stats.answered == n);
    CHECK(stats.bytes_sent > 0);
    dispatcher.stop();
    for (auto& t : devices) t.join();
    CHECK(results == std::vector<int>{0, 0});
  }
}

TEST_CASE("features and forward_head compose to forward; forward_block names bad layers", "[dist]") {
  for (const std::string conn : {"fluid islands=0,1/2,3 cross=off", "incremental"}) {
    auto net = make_net(conn);
    const auto x = torch::randn({2, 1, 12, 12});
    c10::InferenceMode im;
    for (const auto& c : net->configs()) {
      INFO(conn << " config " << c.name());
      CHECK(torch::allclose(net->forward_head(net->features(x, c), c), net->forward(x, c), 1e-6, 1e-6));
    }
    CHECK_THROWS_WITH(net->forward_block(3, x, net->configs().back()), Catch::Contains("layer 3 (valid: 0..2)"));
    CHECK_THROWS_WITH(net->forward_head(torch::zeros({2, 5}), net->configs().back()),
                      Catch::Contains("expects features [N, "));
  }
}
