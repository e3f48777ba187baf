#include "pair_link.h"

#include <dydnn/errors.h>
#include <dydnn/nn/dynamic_net.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace dydnn {
namespace dist {
namespace detail {

namespace {
constexpr int kTag = 7;
// Idle links wait for requests indefinitely; a dead peer is seen by its closed socket
// or by its heartbeat, never by this timeout.
constexpr std::chrono::milliseconds kIdleTimeout = std::chrono::hours(24);

// A UDP socket: connecting one sends nothing, binding one claims nothing for long.
struct UdpSocket {
  explicit UdpSocket(int family) : fd(socket(family, SOCK_DGRAM, 0)) {}
  ~UdpSocket() {
    if (fd >= 0) close(fd);
  }
  int fd;
};

// `host` resolved (numeric or by name), or an error text.
std::string resolve(const std::string& host, sockaddr_storage& out, socklen_t& length) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || !found) return gai_strerror(rc);
  std::memcpy(&out, found->ai_addr, found->ai_addrlen);
  length = found->ai_addrlen;
  freeaddrinfo(found);
  return "";
}

// The source address of this host's route to `host`; empty when there is none.
std::string route_source(const std::string& host) {
  sockaddr_storage to{};
  socklen_t length = 0;
  if (!resolve(host, to, length).empty()) return "";
  reinterpret_cast<sockaddr_in&>(to).sin_port = htons(9);  // any port: nothing is sent
  UdpSocket s(to.ss_family);
  if (s.fd < 0 || connect(s.fd, reinterpret_cast<sockaddr*>(&to), length) != 0) return "";
  sockaddr_storage self{};
  socklen_t self_length = sizeof(self);
  if (getsockname(s.fd, reinterpret_cast<sockaddr*>(&self), &self_length) != 0) return "";
  char text[INET6_ADDRSTRLEN] = {0};
  const void* addr = self.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6&>(self).sin6_addr)
                                                : static_cast<const void*>(&reinterpret_cast<sockaddr_in&>(self).sin_addr);
  return inet_ntop(self.ss_family, addr, text, sizeof(text)) ? text : "";
}
}  // namespace

c10::intrusive_ptr<c10d::Store> open_store(const ClusterOptions& options, bool server,
                                           std::chrono::milliseconds reply_timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(options.master_port);
  o.isServer = server;
  o.waitWorkers = false;
  o.timeout = std::chrono::milliseconds(options.store_timeout_ms);
  try {
    auto store = c10::make_intrusive<c10d::TCPStore>(options.master_addr, o);
    // TCPStore sets its socket's receive timeout only in wait(): a wait for no key returns
    // at once and bounds every later reply.
    if (!server) store->wait({}, reply_timeout.count() > 0 ? reply_timeout : o.timeout);
    return store;
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
  const std::string source = route_source(m);
  if (!source.empty()) return source;
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "127.0.0.1";
  return name;
}

void check_bind_host(const ClusterOptions& options) {
  if (options.bind_host.empty()) return;
  sockaddr_storage at{};
  socklen_t length = 0;
  std::string error = resolve(options.bind_host, at, length);
  if (error.empty()) {
    UdpSocket s(at.ss_family);
    if (s.fd < 0 || bind(s.fd, reinterpret_cast<sockaddr*>(&at), length) != 0) error = std::strerror(errno);
  }
  DYDNN_CHECK_VALUE(error.empty(), "dist",
                    "rank {}: bind host '{}' is no address of this host: {} (valid: an address of one of this "
                    "host's interfaces, or a name resolving to one)",
                    options.rank, options.bind_host, error);
}

std::string key(const std::string& what, int64_t rank) { return fmt::format("dydnn/{}/{}", what, rank); }

PairLink::PairLink(const c10::intrusive_ptr<c10d::Store>& store, const std::string& prefix, int rank,
                   const std::string& bind_host, std::chrono::milliseconds rendezvous_timeout,
                   std::chrono::milliseconds op_timeout, int64_t max_payload, std::atomic<int64_t>* bytes)
    : peer_(1 - rank), op_timeout_(op_timeout), frame_bytes_(kHeaderBytes + 4 * max_payload), bytes_(bytes) {
  TORCH_CHECK(max_payload >= 1, "[dydnn.dist] max payload ", max_payload, " (valid: >= 1)");
  // Gloo's timeout bounds the rendezvous (its store waits, the connect); every receive
  // and send below passes its own.
  auto options = c10d::ProcessGroupGloo::Options::create(rendezvous_timeout);
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(bind_host));
  options->threads = 1;
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
  group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, 2, options);
  std::lock_guard<std::mutex> lock(recv_mutex_);
  for (size_t k = 0; k < kPosted; ++k) post_receive();
}

PairLink::~PairLink() { abort(); }

void PairLink::post_receive() {
  std::vector<at::Tensor> v{torch::empty({frame_bytes_}, torch::kUInt8)};
  auto work = group_->recv(v, peer_, kTag);
  receives_.push_back({work, v[0]});
}

void PairLink::send(const Message& m) {
  if (aborted_) throw std::runtime_error("[dydnn.dist] link closed");
  torch::Tensor payload;
  int64_t h[kHeader] = {static_cast<int64_t>(m.type), m.id, m.attempt, m.k, static_cast<int64_t>(m.mask), 0, 0, 0, 0, 0};
  if (m.payload.defined()) {
    payload = m.payload.to(torch::kFloat).contiguous();
    TORCH_CHECK(payload.dim() >= 1 && payload.dim() <= 4, "[dydnn.dist] payload of ", payload.dim(), " dims (valid: 1..4)");
    TORCH_CHECK(kHeaderBytes + 4 * payload.numel() <= frame_bytes_, "[dydnn.dist] payload of ", payload.numel(),
                " floats exceeds the frame (", (frame_bytes_ - kHeaderBytes) / 4, ")");
    h[5] = payload.dim();
    for (int64_t d = 0; d < payload.dim(); ++d) h[6 + d] = payload.size(d);
  }
  auto frame = torch::empty({frame_bytes_}, torch::kUInt8);
  std::memcpy(frame.data_ptr(), h, kHeaderBytes);
  const int64_t payload_bytes = payload.defined() ? 4 * payload.numel() : 0;
  if (payload_bytes) std::memcpy(frame.data_ptr<uint8_t>() + kHeaderBytes, payload.data_ptr(), payload_bytes);
  // Completed sends leave from the front; a full queue waits for its oldest (bounded).
  while (!sends_.empty() && (sends_.front()->isCompleted() || sends_.size() >= kMaxOutstanding)) {
    if (!sends_.front()->wait(op_timeout_)) throw std::runtime_error("[dydnn.dist] send aborted");
    sends_.pop_front();
  }
  std::vector<at::Tensor> v{frame};
  sends_.push_back(group_->send(v, peer_, kTag));
  if (bytes_) *bytes_ += kHeaderBytes + payload_bytes;
}

Message PairLink::receive() {
  Posted front;
  {
    std::lock_guard<std::mutex> lock(recv_mutex_);
    if (aborted_ || receives_.empty()) throw std::runtime_error("[dydnn.dist] link closed");
    front = receives_.front();
  }
  const bool done = front.work->wait(kIdleTimeout);
  std::lock_guard<std::mutex> lock(recv_mutex_);
  if (!done || aborted_) throw std::runtime_error("[dydnn.dist] link closed");
  receives_.pop_front();
  post_receive();  // always kPosted receives waiting, so that a sender never waits for one
  int64_t h[kHeader];
  std::memcpy(h, front.frame.data_ptr(), kHeaderBytes);
  Message m;
  m.type = static_cast<MessageType>(h[0]);
  m.id = h[1];
  m.attempt = h[2];
  m.k = h[3];
  m.mask = static_cast<uint64_t>(h[4]);
  const int64_t ndim = h[5];
  if (ndim < 0 || ndim > 4) throw std::runtime_error("[dydnn.dist] corrupt message header");
  int64_t payload_bytes = 0;
  if (ndim > 0) {
    std::vector<int64_t> dims(h + 6, h + 6 + ndim);
    m.payload = torch::empty(dims, torch::kFloat);
    payload_bytes = 4 * m.payload.numel();
    if (kHeaderBytes + payload_bytes > frame_bytes_) throw std::runtime_error("[dydnn.dist] corrupt message header");
    std::memcpy(m.payload.data_ptr(), front.frame.data_ptr<uint8_t>() + kHeaderBytes, payload_bytes);
  }
  if (bytes_) *bytes_ += kHeaderBytes + payload_bytes;
  return m;
}

void PairLink::abort() {
  std::lock_guard<std::mutex> lock(recv_mutex_);
  aborted_ = true;
  for (auto& r : receives_) r.work->abort();
}

int64_t max_payload(nn::DynamicNetImpl& net) {
  const auto& s = net.spec();
  c10::InferenceMode inference;
  const nn::Config full = net.connectivity().full_config();
  torch::Tensor x = torch::zeros({1, s.in_channels, s.height, s.width});
  int64_t most = std::max<int64_t>(x.numel(), s.classes);
  for (int64_t k = 0; k < net.num_blocks(); ++k) {
    x = net.forward_block(k, x, full);
    most = std::max<int64_t>(most, x.numel());
  }
  return most;
}

}  // namespace detail
}  // namespace dist
}  // namespace dydnn
