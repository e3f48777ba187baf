#include <dydnn/detail/parse.h>
#include <dydnn/dist/options.h>
#include <dydnn/errors.h>

#include <cstdlib>

namespace dydnn {
namespace dist {

std::string to_string(Mode mode) {
  switch (mode) {
    case Mode::HighThroughput: return "ht";
    case Mode::HighAccuracy: return "ha";
    case Mode::Static: return "static";
    case Mode::Dynamic: return "dynamic";
  }
  return "?";
}

Mode parse_mode(const std::string& text) {
  for (Mode m : {Mode::HighThroughput, Mode::HighAccuracy, Mode::Static, Mode::Dynamic})
    if (to_string(m) == text) return m;
  detail::throw_value_error("dist", "unknown mode '{}' (valid: ht, ha, static, dynamic)", text);
}

void ClusterOptions::validate() const {
  DYDNN_CHECK_VALUE(!master_addr.empty(), "dist", "master address is empty (valid: a host name or IP address)");
  DYDNN_CHECK_VALUE(master_port >= 1 && master_port <= 65535, "dist", "master port {} (valid: 1..65535)", master_port);
  DYDNN_CHECK_VALUE(world_size >= 2 && world_size <= 3, "dist",
                    "world size {} (valid: 2 or 3: a dispatcher and one device per island)", world_size);
  DYDNN_CHECK_VALUE(rank >= 0 && rank < world_size, "dist", "rank {} is out of range for world size {} (valid: 0..{})",
                    rank, world_size, world_size - 1);
  DYDNN_CHECK_VALUE(heartbeat_ms >= 1, "dist", "heartbeat {} ms (valid: >= 1)", heartbeat_ms);
  DYDNN_CHECK_VALUE(failure_timeout_ms > heartbeat_ms, "dist",
                    "failure timeout {} ms (valid: more than the heartbeat, {} ms)", failure_timeout_ms, heartbeat_ms);
  DYDNN_CHECK_VALUE(store_timeout_ms >= 1, "dist", "store timeout {} ms (valid: >= 1)", store_timeout_ms);
  DYDNN_CHECK_VALUE(window >= 1 && window <= 1024, "dist", "window {} (valid: 1..1024)", window);
}

ClusterOptions ClusterOptions::from_env() {
  ClusterOptions o;
  auto env = [](const char* name) -> const char* {
    const char* v = std::getenv(name);
    return v && *v ? v : nullptr;
  };
  if (const char* v = env("MASTER_ADDR")) o.master_addr = v;
  if (const char* v = env("MASTER_PORT")) o.master_port = detail::parse_integer("MASTER_PORT", v, 1, 65535);
  if (const char* v = env("RANK")) o.rank = detail::parse_integer("RANK", v, 0);
  if (const char* v = env("WORLD_SIZE")) o.world_size = detail::parse_integer("WORLD_SIZE", v, 1);
  if (const char* v = env("DYDNN_BIND_HOST")) o.bind_host = v;
  return o;
}

}  // namespace dist
}  // namespace dydnn
