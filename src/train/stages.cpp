#include <dydnn/errors.h>
#include <dydnn/train/stages.h>

#include <torch/torch.h>

#include <unordered_set>

namespace dydnn {
namespace train {

std::string to_string(Method method) {
  switch (method) {
    case Method::Static: return "static";
    case Method::Incremental: return "incremental";
    case Method::Nested: return "nested";
    case Method::Sandwich: return "sandwich";
  }
  return "?";
}

Method method_from_string(const std::string& name) {
  for (Method m : {Method::Static, Method::Incremental, Method::Nested, Method::Sandwich})
    if (to_string(m) == name) return m;
  DYDNN_CHECK_VALUE(false, "train", "unknown training method '{}' (valid: static, incremental, nested, sandwich)",
                    name);
  return Method::Static;
}

std::vector<Stage> plan_stages(const nn::DynamicNetImpl& net, Method method) {
  const auto& conn = net.connectivity();
  const auto& configs = net.configs();
  std::vector<Stage> stages;
  switch (method) {
    case Method::Nested:
      DYDNN_CHECK_VALUE(conn.kind() == nn::ConnectivityKind::Fluid, "train",
                        "method 'nested' trains a fluid net (islands); net '{}' has connectivity '{}' "
                        "(use 'incremental', or a spec with 'connectivity fluid islands=...')",
                        net.spec().name, conn.name());
      [[fallthrough]];
    case Method::Incremental:
      for (const auto& c : configs) stages.push_back(Stage{c, {c}, c.name()});
      return stages;
    case Method::Static:
      return {Stage{conn.full_config(), {conn.full_config()}, "joint"}};
    case Method::Sandwich:
      DYDNN_CHECK_VALUE(configs.size() >= 2, "train",
                        "method 'sandwich' samples configs; net '{}' declares only {} (need at least 2)",
                        net.spec().name, configs.size());
      return {Stage{conn.full_config(), configs, "joint"}};
  }
  return stages;
}

namespace {

std::unordered_set<const void*> used_by(const nn::DynamicNetImpl& net, const std::vector<Stage>& stages, size_t end) {
  std::unordered_set<const void*> used;
  for (size_t s = 0; s < end; ++s)
    for (const auto& c : stages[s].configs)
      for (const auto& t : net.parameters_of(c)) used.insert(t.unsafeGetTensorImpl());
  return used;
}

}  // namespace

std::vector<torch::Tensor> stage_parameters(const nn::DynamicNetImpl& net, const std::vector<Stage>& stages,
                                            size_t index) {
  DYDNN_CHECK_INDEX(index < stages.size(), "train", "stage {} is out of range (valid: 0..{})", index,
                    static_cast<int64_t>(stages.size()) - 1);
  const auto earlier = used_by(net, stages, index);
  std::unordered_set<const void*> seen;
  std::vector<torch::Tensor> out;
  for (const auto& c : stages[index].configs)
    for (const auto& t : net.parameters_of(c)) {
      const void* key = t.unsafeGetTensorImpl();
      if (earlier.count(key) == 0 && seen.insert(key).second) out.push_back(t);
    }
  return out;
}

void unfreeze_all(nn::DynamicNetImpl& net) {
  for (auto& p : net.parameters()) p.set_requires_grad(true);
  for (const auto& c : net.configs()) net.set_frozen_statistics(c, false);
}

std::vector<torch::Tensor> freeze_for_stage(nn::DynamicNetImpl& net, const std::vector<Stage>& stages, size_t index) {
  auto trainable = stage_parameters(net, stages, index);
  for (auto& p : net.parameters()) p.set_requires_grad(false);
  for (auto& p : trainable) p.set_requires_grad(true);
  for (const auto& c : net.configs()) net.set_frozen_statistics(c, false);
  for (size_t s = 0; s < index; ++s)
    for (const auto& c : stages[s].configs) net.set_frozen_statistics(c, true);
  return trainable;
}

}  // namespace train
}  // namespace dydnn
