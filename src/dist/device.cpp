#include "heartbeat.h"
#include "pair_link.h"

#include <dydnn/dist/device.h>
#include <dydnn/dist/islands.h>
#include <dydnn/dist/split_runner.h>
#include <dydnn/errors.h>

#include <condition_variable>
#include <deque>
#include <iostream>
#include <map>
#include <set>
#include <thread>

namespace dydnn {
namespace dist {

namespace {

using detail::Message;
using detail::MessageType;
using Clock = std::chrono::steady_clock;

// What the receiving thread hands the computing one: requests in order, layer outputs by
// (id, attempt, layer), requests the dispatcher has given up on.
class Mailbox {
 public:
  void put(Message m) {
    std::lock_guard<std::mutex> lock(mutex_);
    switch (m.type) {
      case MessageType::Request: jobs_.push_back(std::move(m)); break;
      case MessageType::Feature: features_[{m.id, m.attempt, m.k}] = m.payload; break;
      case MessageType::Drop: dropped_.insert({m.id, m.attempt}); break;
      case MessageType::Stop: stopped_ = true; break;
      default: break;
    }
    cv_.notify_all();
  }
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    cv_.notify_all();
  }
  // The next request; false when the link closed or a stop came.
  bool next(Message& m) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !jobs_.empty() || closed_ || stopped_; });
    if (stopped_ || (closed_ && jobs_.empty())) return false;
    m = std::move(jobs_.front());
    jobs_.pop_front();
    return !closed_;
  }
  bool dropped(int64_t id, int64_t attempt) {
    std::lock_guard<std::mutex> lock(mutex_);
    return dropped_.count({id, attempt}) > 0;
  }
  // The other part's layer output, or a throw when it cannot come.
  torch::Tensor feature(int64_t id, int64_t attempt, int64_t k, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::tuple<int64_t, int64_t, int64_t> at{id, attempt, k};
    const bool ok = cv_.wait_for(lock, timeout, [&] {
      return features_.count(at) || dropped_.count({id, attempt}) || closed_ || stopped_;
    });
    auto it = features_.find(at);
    if (!ok || it == features_.end()) throw std::runtime_error("abandoned");
    torch::Tensor t = it->second;
    features_.erase(it);
    return t;
  }
  void forget(int64_t id, int64_t attempt) {
    std::lock_guard<std::mutex> lock(mutex_);
    dropped_.erase({id, attempt});
    for (auto it = features_.begin(); it != features_.end();)
      it = std::get<0>(it->first) == id && std::get<1>(it->first) == attempt ? features_.erase(it) : std::next(it);
  }
  bool stopped() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stopped_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Message> jobs_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, torch::Tensor> features_;
  std::set<std::pair<int64_t, int64_t>> dropped_;
  bool closed_ = false, stopped_ = false;
};

void log(int64_t rank, const std::string& what) { std::cerr << "[dydnn.dist] device " << rank << ": " << what << std::endl; }

// Leaves the pair (aborts the link) when the dispatcher cannot see this device: the store
// has not answered a heartbeat for the failure timeout (the network is down: the dispatcher
// is declaring the device lost just as well), or the dispatcher declared `gen` lost. A
// partitioned pair sees no error of its own: its sockets just fall silent.
class PairWatch {
 public:
  PairWatch(detail::Heartbeat& heartbeat, detail::PairLink& link, Mailbox& box, int64_t gen, const ClusterOptions& o)
      : thread_([&, gen, o] {
          std::unique_lock<std::mutex> lock(mutex_);
          while (!done_) {
            std::string why;
            if (heartbeat.lost_generation() >= gen)
              why = fmt::format("the dispatcher dropped generation {}", gen);
            else if (heartbeat.silent_ms() >= o.failure_timeout_ms)
              why = fmt::format("no heartbeat reached the store for {} ms", heartbeat.silent_ms());
            if (!why.empty()) {
              log(o.rank, why + ": leaving the pair");
              link.abort();
              box.close();
              return;
            }
            cv_.wait_for(lock, std::chrono::milliseconds(o.heartbeat_ms));
          }
        }) {}
  ~PairWatch() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// Serves one generation of the pair; true when the dispatcher said stop.
bool serve_pair(nn::DynamicNetImpl& net, const Split& split, int64_t part, detail::PairLink& link,
                detail::Heartbeat& heartbeat, int64_t gen, const ClusterOptions& o) {
  Mailbox box;
  PairWatch watch(heartbeat, link, box, gen, o);
  std::thread receiver([&] {
    try {
      for (;;) {
        Message m = link.receive();
        const bool stop = m.type == MessageType::Stop;
        box.put(std::move(m));
        if (stop) break;
      }
    } catch (const std::exception&) {
    }
    box.close();
  });
  const auto wait_feature = std::chrono::milliseconds(4 * o.failure_timeout_ms);
  Message job;
  try {
    while (box.next(job)) {
      if (box.dropped(job.id, job.attempt)) {
        box.forget(job.id, job.attempt);
        continue;
      }
      Message answer;
      answer.type = MessageType::Answer;
      answer.id = job.id;
      answer.attempt = job.attempt;
      answer.mask = job.mask;
      const auto x = job.payload;
      if (job.k < 0) {
        answer.payload = net.forward(x, nn::Config(job.mask));
      } else {
        try {
          answer.payload = run_part(
              net, split, job.k, x,
              [&](int64_t k, const torch::Tensor& t) {
                Message f;
                f.type = MessageType::Feature;
                f.id = job.id;
                f.attempt = job.attempt;
                f.k = k;
                f.payload = t;
                link.send(f);
              },
              [&](int64_t k) { return box.feature(job.id, job.attempt, k, wait_feature); });
        } catch (const std::runtime_error& e) {
          if (std::string(e.what()) != "abandoned") throw;
        }
        box.forget(job.id, job.attempt);
      }
      if (answer.payload.defined()) link.send(answer);
    }
  } catch (const std::exception& e) {
    log(o.rank, std::string("pair broken: ") + e.what());
  }
  link.abort();
  receiver.join();
  return box.stopped();
}

}  // namespace

int run_device(nn::DynamicNet net, const ClusterOptions& options) {
  options.validate();
  DYDNN_CHECK_VALUE(options.rank >= 1, "dist", "a device needs rank 1..{} (got rank {}; rank 0 is the dispatcher)",
                    options.world_size - 1, options.rank);
  detail::check_bind_host(options);
  const int64_t rank = options.rank;
  auto store = detail::open_store(options, false);
  store->wait({"dydnn/mode"}, std::chrono::milliseconds(options.store_timeout_ms));
  const auto bytes = store->get("dydnn/mode");
  const Mode mode = parse_mode(std::string(bytes.begin(), bytes.end()));
  net->eval();
  const Split split = split_for(*net, mode);
  const int64_t part = rank - 1;
  c10::InferenceMode inference;
  {  // The first call of each shape creates its kernels: not on a request's time.
    const auto& s = net->spec();
    const auto x = torch::zeros({1, s.in_channels, s.height, s.width});
    for (const auto& c : net->configs()) net->forward(x, c);
  }

  detail::Heartbeat heartbeat(options);
  log(rank, fmt::format("part {} of '{}' ({}; mode {}, flow {})", part, net->spec().name,
                        split.parts[static_cast<size_t>(part)].name(), to_string(mode), to_string(split.flow)));
  const auto op_timeout = std::chrono::milliseconds(options.failure_timeout_ms * 4);
  const auto rendezvous_timeout = std::chrono::milliseconds(options.store_timeout_ms);
  const int64_t frame = detail::max_payload(*net);
  for (;;) {
    // Out of touch with the store for store_timeout_ms: the dispatcher is gone, or the
    // network has been down that long; a supervisor restarting the device rejoins it.
    if (!heartbeat.wait_for_contact())
      throw std::runtime_error(fmt::format(
          "[dydnn.dist] device {}: lost the store at {}:{}: no answer for {} ms (the dispatcher is gone or "
          "unreachable)",
          rank, options.master_addr, options.master_port, heartbeat.silent_ms()));
    std::unique_ptr<detail::PairLink> link;
    int64_t gen = 0;
    try {
      if (!store) store = detail::open_store(options, false);
      if (store->check({"dydnn/stop"})) return 0;
      gen = store->add(detail::key("gen", rank), 1);
      link = std::make_unique<detail::PairLink>(store, fmt::format("dydnn/pair/{}/{}/", rank, gen), 1,
                                                detail::gloo_host(options), rendezvous_timeout, op_timeout, frame);
    } catch (const std::exception& e) {
      store.reset();  // maybe mid-reply: never reused
      const std::string what = std::string(e.what()).substr(0, 200);
      log(rank, gen ? fmt::format("generation {}: no pair ({}), trying again", gen, what)
                    : fmt::format("no store ({}), trying again", what));
      std::this_thread::sleep_for(std::chrono::milliseconds(options.heartbeat_ms));
      continue;
    }
    log(rank, fmt::format("joined (generation {})", gen));
    if (serve_pair(*net, split, part, *link, heartbeat, gen, options)) {
      log(rank, "stopped by the dispatcher");
      return 0;
    }
  }
}

}  // namespace dist
}  // namespace dydnn
