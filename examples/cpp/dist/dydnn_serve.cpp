// Distributed Fluid serving over torch.distributed's c10d (TCPStore + Gloo pairs).
// One dispatcher (rank 0) and one device process per island (ranks 1, 2):
//
//   dydnn_serve --role dispatcher --model M --mode ht|ha|static|dynamic [--images IDX | --random N | --stream]
//   dydnn_serve --role device --model M
//
// Rank, world size and the store's address come from --rank/--world-size/--master-addr/
// --master-port or from RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (as torch.distributed);
// the address this process's pairs bind, from --bind-host or DYDNN_BIND_HOST.
// The dispatcher prints one line per answer (`id=ID config=NAME attempts=K`, or
// `id=ID error=...`), one per device event (`event=down rank=2 t=1.234 how=...`) and a
// summary; --report writes all of it as JSON. --stream reads requests from stdin, one a
// line: `ID P1 ... Pn` (raw pixels 0..255, C x H x W of them).
#include <dydnn/data/idx.h>
#include <dydnn/detail/parse.h>
#include <dydnn/dist/device.h>
#include <dydnn/dist/dispatcher.h>
#include <dydnn/io/artifact.h>
#include <dydnn/runtime/allocator.h>

#include <torch/torch.h>

#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

namespace {

using dydnn::detail::parse_integer;

struct Options {
  std::string role, model, mode = "ht", images, report, logits;
  int64_t limit = -1, repeat = 1, random = 0, seed = 0, threads = 1, wait_devices_ms = 30000, devices = -1,
          request_timeout_ms = 30000, backlog = 256, rate = 0;
  bool stream = false, quiet = false;
  dydnn::dist::ClusterOptions cluster;
};

const char* kUsage =
    "usage: dydnn_serve --role device --model M [cluster options]\n"
    "       dydnn_serve --role dispatcher --model M [--mode ht|ha|static|dynamic]\n"
    "                   (--images IDX [--limit N] [--repeat K] | --random N [--seed S] | --stream)\n"
    "                   [--rate R] [--devices N] [--wait-devices-ms T] [--request-timeout-ms T] [--backlog N]\n"
    "                   [--report FILE.json] [--logits FILE] [--quiet] [cluster options]\n"
    "cluster options (else RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, DYDNN_BIND_HOST): --rank R --world-size W\n"
    "       --master-addr A --master-port P --heartbeat-ms T --failure-timeout-ms T --store-timeout-ms T\n"
    "       --window N --bind-host H --threads N\n";

Options parse(int argc, char** argv) {
  Options o;
  o.cluster = dydnn::dist::ClusterOptions::from_env();
  for (int k = 1; k < argc; ++k) {
    const std::string a = argv[k];
    const auto value = [&]() -> std::string {
      if (k + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++k];
    };
    auto& c = o.cluster;
    if (a == "--role") o.role = value();
    else if (a == "--model") o.model = value();
    else if (a == "--mode") o.mode = value();
    else if (a == "--images") o.images = value();
    else if (a == "--report") o.report = value();
    else if (a == "--logits") o.logits = value();
    else if (a == "--limit") o.limit = parse_integer(a, value(), 1);
    else if (a == "--repeat") o.repeat = parse_integer(a, value(), 1);
    else if (a == "--random") o.random = parse_integer(a, value(), 1);
    else if (a == "--seed") o.seed = parse_integer(a, value(), 0);
    else if (a == "--threads") o.threads = parse_integer(a, value(), 1, 256);
    else if (a == "--devices") o.devices = parse_integer(a, value(), 0, 2);
    else if (a == "--wait-devices-ms") o.wait_devices_ms = parse_integer(a, value(), 1);
    else if (a == "--request-timeout-ms") o.request_timeout_ms = parse_integer(a, value(), 1);
    else if (a == "--backlog") o.backlog = parse_integer(a, value(), 1);
    else if (a == "--rate") o.rate = parse_integer(a, value(), 1);
    else if (a == "--stream") o.stream = true;
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--rank") c.rank = parse_integer(a, value(), 0);
    else if (a == "--world-size") c.world_size = parse_integer(a, value(), 1);
    else if (a == "--master-addr") c.master_addr = value();
    else if (a == "--master-port") c.master_port = parse_integer(a, value(), 1, 65535);
    else if (a == "--heartbeat-ms") c.heartbeat_ms = parse_integer(a, value(), 1);
    else if (a == "--failure-timeout-ms") c.failure_timeout_ms = parse_integer(a, value(), 1);
    else if (a == "--store-timeout-ms") c.store_timeout_ms = parse_integer(a, value(), 1);
    else if (a == "--window") c.window = parse_integer(a, value(), 1);
    else if (a == "--bind-host") c.bind_host = value();
    else if (a == "-h" || a == "--help") throw std::invalid_argument("");
    else throw std::invalid_argument("unknown argument '" + a + "'");
  }
  if (o.role != "dispatcher" && o.role != "device")
    throw std::invalid_argument("--role '" + o.role + "' (valid: dispatcher, device)");
  if (o.model.empty()) throw std::invalid_argument("no --model given");
  if (o.role == "dispatcher" && int(!o.images.empty()) + int(o.random > 0) + int(o.stream) != 1)
    throw std::invalid_argument("the dispatcher needs exactly one of --images, --random and --stream");
  o.cluster.validate();
  if (o.role == "dispatcher" && o.cluster.rank != 0)
    throw std::invalid_argument("the dispatcher is rank 0 (got rank " + std::to_string(o.cluster.rank) + ")");
  if (o.role == "device" && o.cluster.rank == 0) throw std::invalid_argument("a device needs rank >= 1 (got rank 0)");
  return o;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) continue;
    out += ch;
  }
  return out + "\"";
}

// The requests of --images or --random, normalised, [N, C, H, W].
torch::Tensor load_requests(const Options& o, const dydnn::io::Artifact& a) {
  const auto& spec = a.net->spec();
  torch::Tensor images;
  if (o.random > 0) {
    torch::manual_seed(static_cast<uint64_t>(o.seed));
    images = torch::randint(0, 256, {o.random, spec.in_channels, spec.height, spec.width}).to(torch::kFloat);
  } else {
    images = dydnn::data::read_idx(o.images);
    if (images.dim() == 3) images = images.unsqueeze(1);
    DYDNN_CHECK_VALUE(images.dim() == 4 && images.size(1) == spec.in_channels && images.size(2) == spec.height &&
                          images.size(3) == spec.width,
                      "serve", "{} holds images of shape [{}] but the model takes [N, {}, {}, {}]", o.images,
                      fmt::join(images.sizes(), ", "), spec.in_channels, spec.height, spec.width);
    if (o.limit > 0) images = images.slice(0, 0, std::min(o.limit, images.size(0)));
    images = images.to(torch::kFloat);
  }
  images = a.normalization.apply(images.div_(255.0f));
  if (o.repeat > 1) images = images.repeat({o.repeat, 1, 1, 1});
  return images;
}

int run_dispatcher(const Options& o, dydnn::io::Artifact& a) {
  const auto mode = dydnn::dist::parse_mode(o.mode);
  dydnn::dist::Dispatcher d(a.net, mode, o.cluster, std::chrono::milliseconds(o.request_timeout_ms));
  const int64_t want = o.devices < 0 ? o.cluster.world_size - 1 : o.devices;
  std::cerr << "[dydnn.dist] dispatcher: mode " << o.mode << " (" << dydnn::dist::to_string(d.split().flow)
            << "), waiting for " << want << " device(s) on " << o.cluster.master_addr << ":" << o.cluster.master_port
            << std::endl;
  if (!d.wait_for_devices(want, std::chrono::milliseconds(o.wait_devices_ms)))
    throw std::runtime_error(fmt::format("[dydnn.dist] only {} of {} device(s) joined within {} ms",
                                         d.stats().devices_up, want, o.wait_devices_ms));
  const auto& spec = a.net->spec();
  const int64_t pixels = spec.in_channels * spec.height * spec.width;
  std::vector<dydnn::dist::Event> events;
  std::vector<dydnn::dist::Answer> answers;
  std::map<std::string, int64_t> configs;
  int64_t errors = 0, submitted = 0;
  std::atomic<bool> input_done{false};
  std::mutex submit_mutex;  // the stdin thread and the main loop both print
  auto print_events = [&] {
    for (auto& e : d.take_events()) {
      if (!o.quiet || e.kind != "up")
        std::cout << fmt::format("event={} rank={} t={:.4f} how={}\n", e.kind, e.rank, e.time_s, e.detail);
      events.push_back(e);
    }
  };
  const auto start = std::chrono::steady_clock::now();
  std::thread reader;
  torch::Tensor requests;
  if (o.stream) {
    reader = std::thread([&] {
      std::string line;
      while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        std::string id_text;
        if (!(in >> id_text)) continue;
        std::vector<float> v;
        float p;
        while (in >> p) v.push_back(p);
        std::lock_guard<std::mutex> lock(submit_mutex);
        try {
          const int64_t id = parse_integer("request id", id_text, 0);
          DYDNN_CHECK_VALUE(in.eof(), "serve", "request {}: a value is not a number", id);
          DYDNN_CHECK_VALUE(static_cast<int64_t>(v.size()) == pixels, "serve",
                            "request {}: {} values (valid: {} = {} x {} x {})", id, v.size(), pixels, spec.in_channels,
                            spec.height, spec.width);
          auto x = torch::tensor(v).view({1, spec.in_channels, spec.height, spec.width}).div_(255.0f);
          d.submit(id, a.normalization.apply(x)[0]);
          ++submitted;
        } catch (const std::exception& e) {
          std::cout << "id=" << id_text << " error=" << e.what() << std::endl;
          ++errors;
        }
      }
      input_done = true;
    });
  } else {
    requests = load_requests(o, a);
    std::cerr << "[dydnn.dist] dispatcher: " << requests.size(0) << " requests" << std::endl;
  }
  const int64_t total = requests.defined() ? requests.size(0) : -1;
  for (;;) {
    if (total >= 0) {
      // --rate: requests arrive R a second (else as fast as answers leave room in the backlog).
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const int64_t due = o.rate > 0 ? static_cast<int64_t>(elapsed * double(o.rate)) + 1 : total;
      while (submitted < std::min(total, due) && submitted - static_cast<int64_t>(answers.size()) < o.backlog) {
        d.submit(submitted, requests[submitted]);
        ++submitted;
      }
    }
    auto ans = d.next_answer(std::chrono::milliseconds(o.rate > 0 ? 1 : 50));
    print_events();
    if (ans) {
      std::lock_guard<std::mutex> lock(submit_mutex);
      if (!ans->error.empty()) {
        ++errors;
        std::cout << "id=" << ans->id << " error=" << ans->error << "\n";
      } else {
        ++configs[ans->config];
        if (!o.quiet) std::cout << "id=" << ans->id << " config=" << ans->config << " attempts=" << ans->attempts << "\n";
      }
      if (o.stream) std::cout.flush();
      answers.push_back(std::move(*ans));
    }
    std::lock_guard<std::mutex> lock(submit_mutex);
    const bool all_in = total >= 0 ? submitted == total : input_done.load();
    if (all_in && static_cast<int64_t>(answers.size()) == submitted) break;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (reader.joinable()) reader.join();
  const auto stats = d.stats();
  // The wall-clock time of the dispatcher's clock zero, so that others (a killer) can be compared.
  const double unix_zero =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() - d.seconds();
  d.stop();
  print_events();
  std::string config_list;
  for (auto& [name, n] : configs) config_list += fmt::format("{}{}={}", config_list.empty() ? "" : ", ", name, n);
  const double per_inference = answers.empty() ? 0.0 : double(stats.bytes_sent) / double(answers.size());
  std::cout << fmt::format(
                   "answered {} of {} requests in {:.3f} s: {:.1f} req/s; configs {}; resubmitted {}; duplicates "
                   "dropped {}; bytes/inference {:.0f}\n",
                   answers.size(), submitted, seconds, double(answers.size()) / seconds, config_list, stats.resubmitted,
                   stats.duplicates, per_inference);
  if (!o.logits.empty()) {
    // Logits in id order, float32 [N, classes]; rows of errored requests are NaN.
    std::sort(answers.begin(), answers.end(), [](auto& x, auto& y) { return x.id < y.id; });
    auto all = torch::full({submitted, spec.classes}, std::numeric_limits<float>::quiet_NaN());
    for (auto& an : answers)
      if (an.logits.defined() && an.id < submitted) all[an.id] = an.logits;
    std::ofstream out(o.logits, std::ios::binary);
    out.write(reinterpret_cast<const char*>(all.data_ptr<float>()), all.numel() * sizeof(float));
  }
  if (!o.report.empty()) {
    std::ofstream r(o.report);
    DYDNN_CHECK_VALUE(r.good(), "serve", "cannot write {}", o.report);
    r << "{\"mode\": " << json_string(o.mode) << ", \"flow\": " << json_string(dydnn::dist::to_string(d.split().flow))
      << ", \"requests\": " << submitted << ", \"answered\": " << answers.size() << ", \"errors\": " << errors
      << ", \"seconds\": " << seconds << ", \"throughput\": " << double(answers.size()) / seconds
      << ", \"bytes\": " << stats.bytes_sent << ", \"bytes_per_inference\": " << per_inference
      << ", \"unix_zero\": " << fmt::format("{:.6f}", unix_zero) << ", \"resubmitted\": " << stats.resubmitted << ", \"duplicates\": " << stats.duplicates << ", \"configs\": {";
    bool first = true;
    for (auto& [name, n] : configs) {
      r << (first ? "" : ", ") << json_string(name) << ": " << n;
      first = false;
    }
    r << "}, \"events\": [";
    for (size_t i = 0; i < events.size(); ++i)
      r << (i ? ", " : "") << fmt::format("{{\"t\": {:.6f}, \"kind\": {}, \"rank\": {}, \"detail\": {}}}",
                                          events[i].time_s, json_string(events[i].kind), events[i].rank,
                                          json_string(events[i].detail));
    r << "], \"answers\": [";
    for (size_t i = 0; i < answers.size(); ++i)
      r << (i ? ", " : "") << fmt::format("[{}, {}, {}, {:.6f}]", answers[i].id,
                                          json_string(answers[i].error.empty() ? answers[i].config : "error"),
                                          answers[i].attempts, answers[i].time_s);
    r << "]}\n";
  }
  std::cout.flush();
  return errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    if (*e.what()) std::cerr << "dydnn_serve: " << e.what() << "\n";
    std::cerr << kUsage;
    return 2;
  }
  try {
    dydnn::runtime::retain_freed_memory();
    torch::set_num_threads(static_cast<int>(o.threads));
    auto artifact = dydnn::io::load(o.model);
    artifact.net->eval();
    if (o.role == "device") return dydnn::dist::run_device(artifact.net, o.cluster);
    c10::InferenceMode inference;
    return run_dispatcher(o, artifact);
  } catch (const std::exception& e) {
    std::cerr << "dydnn_serve: " << e.what() << "\n";
    return 1;
  }
}
