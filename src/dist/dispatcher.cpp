#include "dispatch_state.h"

#include <dydnn/errors.h>

#include <iostream>

namespace dydnn {
namespace dist {

using detail::Message;
using detail::MessageType;

namespace {
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
}  // namespace

void Dispatcher::State::push(Slot& s, Message m) {
  s.outbox.push_back(std::move(m));
  s.outbox_cv.notify_one();
}

void Dispatcher::State::assign(int64_t id, PendingRequest& r, const std::vector<size_t>& to) {
  ++r.attempt;
  r.slots = to;
  for (size_t i : to) {
    Slot& s = *slots[i];
    s.in_flight.insert(id);
    Message m;
    m.type = MessageType::Request;
    m.id = id;
    m.attempt = r.attempt;
    m.k = to.size() == 1 ? -1 : s.part;
    m.mask = (to.size() == 1 ? split.standalone[static_cast<size_t>(s.part)] : split.combined).mask();
    m.payload = r.input;
    push(s, std::move(m));
  }
}

void Dispatcher::State::schedule() {
  const auto window = static_cast<size_t>(options.window);
  auto slot_of = [&](int64_t part) -> Slot* {
    for (auto& s : slots)
      if (s->up && s->part == part) return s.get();
    return nullptr;
  };
  while (!pending.empty()) {
    const int64_t id = pending.front();
    auto it = requests.find(id);
    if (it == requests.end() || !it->second.slots.empty()) {
      pending.pop_front();
      continue;
    }
    Slot* p0 = slot_of(0);
    Slot* p1 = slot_of(1);
    if (mode != Mode::HighThroughput && p0 && p1) {
      if (p0->in_flight.size() >= window || p1->in_flight.size() >= window) return;
      assign(id, it->second, {static_cast<size_t>(p0->rank - 1), static_cast<size_t>(p1->rank - 1)});
    } else {
      Slot* best = nullptr;
      for (auto& s : slots) {
        if (!s->up || split.standalone[static_cast<size_t>(s->part)].empty() || s->in_flight.size() >= window) continue;
        if (!best || s->in_flight.size() < best->in_flight.size()) best = s.get();
      }
      if (!best) return;  // full, or nothing can serve alone: the request waits (a rejoin, or expire())
      assign(id, it->second, {static_cast<size_t>(best->rank - 1)});
    }
    pending.pop_front();
  }
}

void Dispatcher::State::lose(size_t index, int64_t gen, const std::string& how) {
  std::lock_guard<std::mutex> lock(mutex);
  Slot& s = *slots[index];
  if (!s.up || s.gen != gen) return;
  s.up = false;
  s.outbox.clear();
  s.outbox_closed = true;
  s.outbox_cv.notify_all();
  if (!stopping) events.push_back({now_s(), "down", s.rank, how});
  // Back to the front of the queue in id order, ahead of requests never sent.
  for (auto it = s.in_flight.rbegin(); it != s.in_flight.rend(); ++it) {
    auto r = requests.find(*it);
    if (r == requests.end()) continue;
    for (size_t other : r->second.slots) {
      if (other == index) continue;
      Slot& o = *slots[other];
      o.in_flight.erase(*it);
      if (o.up) {
        Message drop;
        drop.type = MessageType::Drop;
        drop.id = *it;
        drop.attempt = r->second.attempt;
        push(o, std::move(drop));
      }
    }
    r->second.slots.clear();
    pending.push_front(*it);
    ++counts.resubmitted;
  }
  s.in_flight.clear();
  schedule();
  devices_cv.notify_all();
}

void Dispatcher::State::on_message(size_t index, int64_t gen, Message m) {
  std::lock_guard<std::mutex> lock(mutex);
  Slot& s = *slots[index];
  if (!s.up || s.gen != gen) return;
  auto r = requests.find(m.id);
  const bool current = r != requests.end() && r->second.attempt == m.attempt && !r->second.slots.empty();
  if (m.type == MessageType::Answer) {
    if (!current) {
      ++counts.duplicates;
      return;
    }
    for (size_t i : r->second.slots) slots[i]->in_flight.erase(m.id);
    Answer a;
    a.id = m.id;
    a.config = nn::Config(m.mask).name();
    a.logits = m.payload.defined() ? m.payload.squeeze(0) : m.payload;
    a.attempts = r->second.attempt;
    a.time_s = now_s();
    requests.erase(r);
    answered_ids.insert(m.id);
    ++counts.answered;
    answers.push_back(std::move(a));
    answers_cv.notify_all();
    schedule();
  } else if (m.type == MessageType::Feature && current) {
    for (size_t i : r->second.slots)
      if (i != index && slots[i]->up) push(*slots[i], std::move(m));
  }
}

void Dispatcher::State::manage(size_t index) {
  Slot& s = *slots[index];
  c10::intrusive_ptr<c10d::Store> store;
  const auto tick = std::chrono::milliseconds(std::clamp<int64_t>(options.heartbeat_ms / 2, 1, 20));
  const auto op_timeout = std::chrono::milliseconds(4 * options.failure_timeout_ms);
  const auto rendezvous_timeout = std::chrono::milliseconds(options.store_timeout_ms);
  int64_t last_gen = 0;
  int64_t lost_mark = 0;  // the generation last published as lost (dydnn/lost/<rank>)
  while (!stopping) {
    try {
      if (!store) store = detail::open_store(options, false);
      const int64_t gen = detail::counter(*store, detail::key("gen", s.rank));
      if (gen <= last_gen) {
        std::this_thread::sleep_for(tick);
        continue;
      }
      last_gen = gen;
      std::unique_ptr<detail::PairLink> link;
      try {
        link = std::make_unique<detail::PairLink>(store, fmt::format("dydnn/pair/{}/{}/", s.rank, gen), 0,
                                                  detail::gloo_host(options), rendezvous_timeout, op_timeout,
                                                  max_payload, &bytes);
      } catch (const std::exception& e) {
        {
          std::lock_guard<std::mutex> lock(mutex);
          events.push_back({now_s(), "join-failed", s.rank, first_line(e.what())});
        }
        store->add(detail::key("lost", s.rank), gen - lost_mark);  // its end may have connected
        lost_mark = gen;
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mutex);
        s.gen = gen;
        s.up = true;
        s.outbox.clear();
        s.outbox_closed = false;
        events.push_back({now_s(), "up", s.rank, fmt::format("generation {}", gen)});
        schedule();
        devices_cv.notify_all();
      }
      std::thread receiver([this, index, gen, &link] {
        try {
          for (;;) on_message(index, gen, link->receive());
        } catch (const std::exception& e) {
          lose(index, gen, "link: " + first_line(e.what()));
        }
      });
      std::thread sender([this, index, gen, &s, &link] {
        for (;;) {
          Message m;
          {
            std::unique_lock<std::mutex> lock(mutex);
            s.outbox_cv.wait(lock, [&] { return !s.outbox.empty() || s.outbox_closed || s.gen != gen; });
            if (s.outbox.empty() || s.gen != gen) return;
            m = std::move(s.outbox.front());
            s.outbox.pop_front();
          }
          try {
            link->send(m);
          } catch (const std::exception& e) {
            lose(index, gen, "send: " + first_line(e.what()));
            return;
          }
          if (m.type == MessageType::Stop) return;
        }
      });
      // The store is this process's own, yet a store error must not leave the threads above unjoined.
      try {
        int64_t hb = detail::counter(*store, detail::key("hb", s.rank));
        auto hb_at = Clock::now();
        for (;;) {
          {
            std::lock_guard<std::mutex> lock(mutex);
            if (!s.up || s.gen != gen || stopping) break;
          }
          std::this_thread::sleep_for(tick);
          const int64_t v = detail::counter(*store, detail::key("hb", s.rank));
          if (v != hb) {
            hb = v;
            hb_at = Clock::now();
          } else if (Clock::now() - hb_at > std::chrono::milliseconds(options.failure_timeout_ms)) {
            lose(index, gen, "heartbeat");
          }
          if (detail::counter(*store, detail::key("gen", s.rank)) != gen) lose(index, gen, "rejoined");
        }
      } catch (const std::exception& e) {
        lose(index, gen, "store: " + first_line(e.what()));
        store.reset();
      }
      if (stopping) {
        std::unique_lock<std::mutex> lock(mutex);
        if (s.up && s.gen == gen) {
          Message stop;
          stop.type = MessageType::Stop;
          push(s, std::move(stop));
          s.outbox_closed = true;
          // The sender leaves after the stop; the device then closes its end.
        }
      }
      if (stopping) sender.join();
      lose(index, gen, "closed");
      link->abort();
      if (sender.joinable()) sender.join();
      receiver.join();
      // A partitioned device sees no error on its pair: this tells it to rejoin.
      if (!stopping) {
        if (!store) store = detail::open_store(options, false);
        store->add(detail::key("lost", s.rank), gen - lost_mark);
      }
      lost_mark = gen;
    } catch (const std::exception& e) {
      store.reset();  // maybe mid-reply: never reused
      if (stopping) break;
      std::lock_guard<std::mutex> lock(mutex);
      events.push_back({now_s(), "error", s.rank, first_line(e.what())});
      std::this_thread::sleep_for(tick);
    }
  }
}

bool Dispatcher::State::capable() const {
  int64_t up = 0;
  for (const auto& s : slots) {
    if (!s->up) continue;
    ++up;
    if (!split.standalone[static_cast<size_t>(s->part)].empty()) return true;
  }
  return mode != Mode::HighThroughput && up == 2;
}

void Dispatcher::State::expire() {
  while (!stopping) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::lock_guard<std::mutex> lock(mutex);
    const auto now = Clock::now();
    if (capable()) {
      incapable_since.reset();
      continue;
    }
    if (!incapable_since) incapable_since = now;
    if (now - *incapable_since < request_timeout) continue;
    const auto up = std::count_if(slots.begin(), slots.end(), [](auto& s) { return s->up; });
    for (int64_t id : pending) {
      auto r = requests.find(id);
      if (r == requests.end() || !r->second.slots.empty()) continue;
      Answer a;
      a.id = id;
      a.attempts = r->second.attempt;
      a.time_s = now_s();
      a.error = fmt::format("no device could serve it for {} ms (mode {}, {} of {} devices up)",
                            request_timeout.count(), to_string(mode), up, slots.size());
      answered_ids.insert(id);
      requests.erase(r);
      ++counts.answered;
      answers.push_back(std::move(a));
    }
    pending.clear();
    answers_cv.notify_all();
  }
}

Dispatcher::Dispatcher(nn::DynamicNet net, Mode mode, ClusterOptions options, std::chrono::milliseconds request_timeout)
    : state_(std::make_shared<State>()) {
  options.validate();
  DYDNN_CHECK_VALUE(options.rank == 0, "dist", "the dispatcher is rank 0 (got rank {})", options.rank);
  detail::check_bind_host(options);
  DYDNN_CHECK_VALUE(request_timeout.count() > 0, "dist", "request timeout {} ms (valid: > 0)", request_timeout.count());
  auto& st = *state_;
  st.net = net;
  st.mode = mode;
  st.options = options;
  st.split = split_for(*net, mode);
  st.max_payload = detail::max_payload(*net);
  st.request_timeout = request_timeout;
  st.server = detail::open_store(options, true);
  const std::string mode_name = to_string(mode);
  st.server->set("dydnn/mode", std::vector<uint8_t>(mode_name.begin(), mode_name.end()));
  for (int64_t r = 1; r < options.world_size; ++r) {
    auto s = std::make_unique<Slot>();
    s->rank = r;
    s->part = r - 1;
    st.slots.push_back(std::move(s));
  }
  for (size_t i = 0; i < st.slots.size(); ++i) st.slots[i]->manager = std::thread([&st, i] { st.manage(i); });
  st.watchdog = std::thread([&st] { st.expire(); });
}

Dispatcher::~Dispatcher() { stop(); }

void Dispatcher::stop() {
  auto& st = *state_;
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    if (st.stopped) return;
    st.stopped = true;
  }
  try {
    st.server->set("dydnn/stop", {1});
  } catch (const std::exception&) {
  }
  st.stopping = true;
  for (auto& s : st.slots) {
    s->outbox_cv.notify_all();
    if (s->manager.joinable()) s->manager.join();
  }
  if (st.watchdog.joinable()) st.watchdog.join();
}

void Dispatcher::submit(int64_t id, const torch::Tensor& input) {
  auto& st = *state_;
  const auto& sp = st.net->spec();
  DYDNN_CHECK_VALUE(input.defined() && input.dim() == 3 && input.size(0) == sp.in_channels &&
                        input.size(1) == sp.height && input.size(2) == sp.width,
                    "dist", "request {}: input of shape [{}] (valid: [{}, {}, {}] for model '{}')", id,
                    input.defined() ? fmt::format("{}", fmt::join(input.sizes(), ", ")) : "undefined", sp.in_channels,
                    sp.height, sp.width, sp.name);
  std::lock_guard<std::mutex> lock(st.mutex);
  DYDNN_CHECK_VALUE(!st.stopped, "dist", "request {}: the dispatcher is stopped", id);
  DYDNN_CHECK_VALUE(!st.requests.count(id) && !st.answered_ids.count(id), "dist",
                    "request id {} was already submitted (valid: a new id)", id);
  PendingRequest r;
  r.input = input.to(torch::kFloat).unsqueeze(0).contiguous();
  st.requests.emplace(id, std::move(r));
  st.pending.push_back(id);
  ++st.counts.submitted;
  st.schedule();
}

std::optional<Answer> Dispatcher::next_answer(std::chrono::milliseconds timeout) {
  auto& st = *state_;
  std::unique_lock<std::mutex> lock(st.mutex);
  if (!st.answers_cv.wait_for(lock, timeout, [&] { return !st.answers.empty(); })) return std::nullopt;
  Answer a = std::move(st.answers.front());
  st.answers.pop_front();
  return a;
}

bool Dispatcher::wait_for_devices(int64_t count, std::chrono::milliseconds timeout) {
  auto& st = *state_;
  std::unique_lock<std::mutex> lock(st.mutex);
  return st.devices_cv.wait_for(lock, timeout, [&] {
    return std::count_if(st.slots.begin(), st.slots.end(), [](auto& s) { return s->up; }) >= count;
  });
}

std::vector<Event> Dispatcher::take_events() {
  auto& st = *state_;
  std::lock_guard<std::mutex> lock(st.mutex);
  std::vector<Event> out;
  out.swap(st.events);
  return out;
}

DispatcherStats Dispatcher::stats() const {
  auto& st = *state_;
  std::lock_guard<std::mutex> lock(st.mutex);
  DispatcherStats s = st.counts;
  s.pending = static_cast<int64_t>(st.requests.size());
  for (auto& slot : st.slots) {
    s.in_flight += static_cast<int64_t>(slot->in_flight.size());
    s.devices_up += slot->up;
  }
  s.pending -= s.in_flight;
  s.bytes_sent = st.bytes.load();
  return s;
}

const Split& Dispatcher::split() const { return state_->split; }

double Dispatcher::seconds() const { return state_->now_s(); }

}  // namespace dist
}  // namespace dydnn
