#include <dydnn/errors.h>
#include <dydnn/hw/dvfs.h>

#include <algorithm>

namespace dydnn {
namespace hw {

const char* to_string(DomainKind kind) {
  switch (kind) {
    case DomainKind::CpuCluster:
      return "cpu";
    case DomainKind::Gpu:
      return "gpu";
    case DomainKind::Memory:
      return "memory";
  }
  return "?";
}

uint64_t snap_up(const std::vector<uint64_t>& table, uint64_t hz) {
  if (table.empty()) return hz;
  const auto it = std::lower_bound(table.begin(), table.end(), hz);
  return it == table.end() ? table.back() : *it;
}

uint64_t snap_down(const std::vector<uint64_t>& table, uint64_t hz) {
  if (table.empty()) return hz;
  const auto it = std::upper_bound(table.begin(), table.end(), hz);
  return it == table.begin() ? table.front() : *(it - 1);
}

int DvfsBackend::find(const std::string& name) const {
  const auto& d = domains();
  for (size_t k = 0; k < d.size(); ++k)
    if (d[k].name == name) return static_cast<int>(k);
  return -1;
}

void DvfsBackend::check_domain(size_t domain) const {
  DYDNN_CHECK_INDEX(domain < domains().size(), "hw", "{}: domain {} is out of range (valid: 0..{})", name(), domain,
                    static_cast<int64_t>(domains().size()) - 1);
}

}  // namespace hw
}  // namespace dydnn
