#include "pair_link.h"

#include <dydnn/errors.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <unistd.h>

namespace dydnn {
namespace dist {
namespace detail {

namespace {
constexpr int64_t kHeader = 10;  // type, id, attempt, k, mask, ndim, 4 dims
constexpr int kTag = 7;
// Idle links wait for requests indefinitely; a dead peer is seen by its closed socket
// or by its heartbeat, never by this timeout.
constexpr std::chrono::hours kIdleTimeout{24};
}  // namespace

c10::intrusive_ptr<c10d::Store> open_store(const ClusterOptions& options, bool server) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(options.master_port);
  o.isServer = server;
  o.waitWorkers = false;
  o.timeout = std::chrono::milliseconds(options.store_timeout_ms);
  try {
    return c10::make_intrusive<c10d::TCPStore>(options.master_addr, o);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw std::runtime_error(fmt::format("[dydnn.dist] rank {}: {} the store at {}:{} within {} ms: {}", options.rank,
                                         server ? "cannot start" : "cannot reach", options.master_addr,
                                         options.master_port, options.store_timeout_ms, what));
  }
}

std::string gloo_host(const ClusterOptions& options) {
  if (!options.bind_host.empty()) return options.bind_host;
  const std::string& m = options.master_addr;
  if (m == "localhost" || m.rfind("127.", 0) == 0) return "127.0.0.1";
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "127.0.0.1";
  return name;
}

std::string key(const std::string& what, int64_t rank) { return fmt::format("dydnn/{}/{}", what, rank); }

PairLink::PairLink(const c10::intrusive_ptr<c10d::Store>& store, const std::string& prefix, int rank,
                   const std::string& bind_host, std::chrono::milliseconds op_timeout, std::atomic<int64_t>* bytes)
    : peer_(1 - rank), op_timeout_(op_timeout), bytes_(bytes) {
  auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::duration_cast<std::chrono::milliseconds>(kIdleTimeout));
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(bind_host));
  options->threads = 1;
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
  group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, 2, options);
}

PairLink::~PairLink() { abort(); }

void PairLink::send_tensor(torch::Tensor t) {
  std::vector<at::Tensor> v{std::move(t)};
  // Completed sends leave from the front; a full queue waits for its oldest (bounded).
  while (!sends_.empty() && (sends_.front()->isCompleted() || sends_.size() >= kMaxOutstanding)) {
    if (!sends_.front()->wait(op_timeout_)) throw std::runtime_error("[dydnn.dist] send aborted");
    sends_.pop_front();
  }
  sends_.push_back(group_->send(v, peer_, kTag));
  if (bytes_) *bytes_ += static_cast<int64_t>(v[0].numel() * v[0].element_size());
}

void PairLink::receive_into(torch::Tensor& t) {
  std::vector<at::Tensor> v{t};
  c10::intrusive_ptr<c10d::Work> work;
  {
    std::lock_guard<std::mutex> lock(recv_mutex_);
    if (aborted_) throw std::runtime_error("[dydnn.dist] link closed");
    work = group_->recv(v, peer_, kTag);
    pending_recv_ = work;
  }
  const bool done = work->wait();
  std::lock_guard<std::mutex> lock(recv_mutex_);
  if (!done || aborted_) throw std::runtime_error("[dydnn.dist] link closed");
  pending_recv_.reset();
  if (bytes_) *bytes_ += static_cast<int64_t>(t.numel() * t.element_size());
}

void PairLink::send(const Message& m) {
  if (aborted_) throw std::runtime_error("[dydnn.dist] link closed");
  auto header = torch::zeros({kHeader}, torch::kLong);
  auto h = header.accessor<int64_t, 1>();
  h[0] = static_cast<int64_t>(m.type);
  h[1] = m.id;
  h[2] = m.attempt;
  h[3] = m.k;
  h[4] = static_cast<int64_t>(m.mask);
  torch::Tensor payload;
  if (m.payload.defined()) {
    payload = m.payload.to(torch::kFloat).contiguous();
    TORCH_CHECK(payload.dim() >= 1 && payload.dim() <= 4, "[dydnn.dist] payload of ", payload.dim(), " dims (valid: 1..4)");
    h[5] = payload.dim();
    for (int64_t d = 0; d < payload.dim(); ++d) h[6 + d] = payload.size(d);
  }
  send_tensor(header);
  if (payload.defined()) send_tensor(payload);
}

Message PairLink::receive() {
  auto header = torch::zeros({kHeader}, torch::kLong);
  receive_into(header);
  auto h = header.accessor<int64_t, 1>();
  Message m;
  m.type = static_cast<MessageType>(h[0]);
  m.id = h[1];
  m.attempt = h[2];
  m.k = h[3];
  m.mask = static_cast<uint64_t>(h[4]);
  const int64_t ndim = h[5];
  if (ndim < 0 || ndim > 4) throw std::runtime_error("[dydnn.dist] corrupt message header");
  if (ndim > 0) {
    std::vector<int64_t> dims(h.data() + 6, h.data() + 6 + ndim);
    m.payload = torch::empty(dims, torch::kFloat);
    receive_into(m.payload);
  }
  return m;
}

void PairLink::abort() {
  std::lock_guard<std::mutex> lock(recv_mutex_);
  aborted_ = true;
  if (pending_recv_) pending_recv_->abort();
}

}  // namespace detail
}  // namespace dist
}  // namespace dydnn
