// Trainers: stage invariants (bitwise), what trains and what is frozen, the split
// training forward, loss going down, exact resume, and bad input.
#include <dydnn/train/trainer.h>

#include <catch2/catch.hpp>

#include "quadrants.h"

#include <filesystem>
#include <map>

namespace {

using dydnn::data::ImageDataset;
using dydnn::nn::Config;
using dydnn::nn::DynamicNet;
using dydnn::nn::NetSpec;
using dydnn::train::Method;
using dydnn::train::Trainer;
using dydnn::train::TrainOptions;

NetSpec tiny_spec(const std::string& connectivity, const std::string& head = "additive") {
  return NetSpec::parse("dydnn-spec 1\nname tiny\ninput 1 8 8\nclasses 4\ngroups 4\nconnectivity " + connectivity +
                        "\nhead " + head +
                        "\nconv 8 kernel=3 padding=1 bn relu maxpool=2\nconv 16 kernel=3 padding=1 bn relu maxpool=2\n");
}

// Four classes, each a bright quadrant, plus noise: learnable in a few epochs.
ImageDataset tiny_data(int64_t n, uint64_t seed) { return quadrants(n, seed); }

std::map<std::string, torch::Tensor> snapshot(const DynamicNet& net) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : net->named_parameters()) out[p.key()] = p.value().detach().clone();
  for (const auto& b : net->named_buffers()) out[b.key()] = b.value().clone();
  return out;
}

std::map<Config, torch::Tensor> outputs(DynamicNet& net, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  net->eval();
  std::map<Config, torch::Tensor> out;
  for (const auto& c : net->configs()) out[c] = net->forward(x, c).clone();
  net->train();
  return out;
}

TrainOptions quick(Method method, int64_t epochs = 1) {
  TrainOptions o;
  o.method = method;
  o.epochs = {epochs};
  o.lr = {0.05};
  o.batch_size = 16;
  o.progress = false;
  return o;
}

// One epoch of `trainer` over `data` through the public per-batch API.
void run_epoch(Trainer& trainer, const ImageDataset& data, int64_t batch_size) {
  const auto order = trainer.epoch_order(data.size());
  for (int64_t b = 0; b < data.size(); b += batch_size) {
    auto index = order.slice(0, b, b + batch_size);
    trainer.step(trainer.normalization().apply(data.images.index_select(0, index)), data.labels.index_select(0, index));
  }
  trainer.end_epoch({});
}

// Trains stage by stage; after each, every earlier config must give bitwise the same
// outputs and every parameter outside the stage must be bitwise unchanged.
void check_staged_invariants(const NetSpec& spec, Method method) {
  torch::manual_seed(1);
  DynamicNet net(spec);
  Trainer trainer(net, quick(method));
  const auto data = tiny_data(64, 3);
  const auto probe = dydnn::data::Normalization::fit(data.images).apply(tiny_data(8, 9).images);
  trainer.set_normalization(dydnn::data::Normalization::fit(data.images));
  const auto& stages = trainer.stages();
  for (size_t s = 0; s < stages.size(); ++s) {
    INFO("stage " << s << " (" << stages[s].name << ")");
    const auto before = outputs(net, probe);
    const auto params_before = snapshot(net);
    auto trainable = dydnn::train::stage_parameters(*net, stages, s);
    std::set<const void*> trains;
    for (const auto& t : trainable) trains.insert(t.unsafeGetTensorImpl());
    // Nothing an earlier stage used is trained again.
    for (size_t e = 0; e < s; ++e)
      for (const auto& t : net->parameters_of(stages[e].config)) CHECK(trains.count(t.unsafeGetTensorImpl()) == 0);
    ImageDataset one_stage = data;
    REQUIRE(trainer.stage() == s);
    if (trainer.stage_is_empty()) {
      trainer.skip_stage();
      continue;
    }
    // Only this stage's parameters reach the optimiser and require gradients.
    const auto prepared = trainer.prepare();
    CHECK(prepared.size() == trainable.size());
    for (const auto& p : net->parameters()) CHECK(p.requires_grad() == (trains.count(p.unsafeGetTensorImpl()) == 1));
    while (trainer.stage() == s) run_epoch(trainer, data, 16);
    const auto after = outputs(net, probe);
    for (size_t e = 0; e < s; ++e) {
      INFO("earlier config " << stages[e].config.name());
      CHECK(torch::equal(before.at(stages[e].config), after.at(stages[e].config)));
    }
    const auto params_after = snapshot(net);
    bool stage_changed = false;
    for (const auto& p : net->named_parameters()) {
      const bool same = torch::equal(params_before.at(p.key()), params_after.at(p.key()));
      if (trains.count(p.value().unsafeGetTensorImpl()) == 0) {
        INFO("frozen parameter " << p.key());
        CHECK(same);
      } else {
        stage_changed |= !same;
      }
    }
    CHECK(stage_changed);
  }
}

}  // namespace

TEST_CASE("incremental training keeps earlier configs bitwise and trains only its groups", "[train]") {
  check_staged_invariants(tiny_spec("incremental"), Method::Incremental);
}

TEST_CASE("nested Fluid training keeps earlier configs bitwise, cross and late fusion", "[train]") {
  check_staged_invariants(tiny_spec("fluid islands=0,1/2,3 cross=on", "per_config"), Method::Nested);
  check_staged_invariants(tiny_spec("fluid islands=0,1/2,3 cross=off", "per_config"), Method::Nested);
  check_staged_invariants(tiny_spec("fluid islands=0,1/2,3 cross=off", "additive"), Method::Nested);
}

TEST_CASE("nested stages follow design 4.2, and C*, C*D* do not read A's or B's weights", "[train]") {
  torch::manual_seed(2);
  DynamicNet net(tiny_spec("fluid islands=0,1/2,3 cross=on", "per_config"));
  const auto stages = dydnn::train::plan_stages(*net, Method::Nested);
  std::vector<std::string> names;
  for (const auto& s : stages) names.push_back(s.name);
  CHECK(names == std::vector<std::string>{"A", "AB", "C", "CD", "ABC", "ABCD"});  // C* etc. in design 4.2
  // Stage 5 trains the cross edges into C and the ABC* head, nothing of A, B or C's own blocks.
  std::set<std::string> stage5;
  const auto trainable = dydnn::train::stage_parameters(*net, stages, 4);
  for (const auto& p : net->named_parameters())
    for (const auto& t : trainable)
      if (t.unsafeGetTensorImpl() == p.value().unsafeGetTensorImpl()) stage5.insert(p.key());
  CHECK(stage5.count("conv1.weight_2_0") == 1);
  CHECK(stage5.count("conv1.weight_2_1") == 1);
  CHECK(stage5.count("conv1.weight_2_2") == 0);
  CHECK(stage5.count("head_ABC.weight") == 1);
  CHECK(stage5.count("conv1.weight_0_0") == 0);
  // Changing A and B's weights leaves C* and C*D* unchanged.
  const auto x = torch::randn({4, 1, 8, 8});
  const auto before = outputs(net, x);
  {
    torch::NoGradGuard no_grad;
    for (const auto& t : net->parameters_of(Config::of({0, 1}))) t.add_(torch::randn_like(t));
  }
  const auto after = outputs(net, x);
  CHECK(torch::equal(before.at(Config::of({2})), after.at(Config::of({2}))));
  CHECK(torch::equal(before.at(Config::of({2, 3})), after.at(Config::of({2, 3}))));
  CHECK_FALSE(torch::equal(before.at(Config::of({0, 1})), after.at(Config::of({0, 1}))));
}

TEST_CASE("the split training forward equals the plain forward", "[train]") {
  torch::manual_seed(3);
  DynamicNet net(tiny_spec("incremental"));
  const auto stages = dydnn::train::plan_stages(*net, Method::Incremental);
  dydnn::train::freeze_for_stage(*net, stages, 2);
  net->train();
  const auto x = torch::randn({8, 1, 8, 8});
  const Config abc = Config::prefix(3);
  CHECK(net->frozen_part(abc) == Config::prefix(2));
  const auto split = net->forward(x, abc);  // grad mode: the frozen part runs without autograd
  REQUIRE(split.requires_grad());
  torch::Tensor plain;
  {
    torch::NoGradGuard no_grad;
    plain = net->forward(x, abc);
  }
  CHECK(torch::allclose(split, plain, 1e-5, 1e-5));
  // Gradients reach only the third group's parameters.
  split.sum().backward();
  for (const auto& p : net->named_parameters())
    if (!p.value().requires_grad()) CHECK_FALSE(p.value().grad().defined());
}

TEST_CASE("every method lowers the loss on a tiny set", "[train]") {
  for (auto [method, connectivity] : std::vector<std::pair<Method, std::string>>{
           {Method::Static, "prefix"}, {Method::Incremental, "incremental"}, {Method::Sandwich, "prefix"}}) {
    INFO(dydnn::train::to_string(method));
    torch::manual_seed(4);
    DynamicNet net(tiny_spec(connectivity, connectivity == "prefix" ? "prefix" : "additive"));
    auto opts = quick(method, 4);
    Trainer trainer(net, opts);
    const auto data = tiny_data(128, 5);
    trainer.fit(data);
    const auto& h = trainer.history();
    REQUIRE(h.size() >= 4);
    CHECK(h.back().loss < h[h.size() - 4].loss);
    const auto table = dydnn::train::evaluate_configs(*net, data, trainer.normalization());
    CHECK(table.back().metrics.top1() > 0.5);
    CHECK(table.back().normalised_confidence == Approx(1.0));
  }
}

TEST_CASE("resuming from a checkpoint reproduces the uninterrupted run bitwise", "[train]") {
  const auto dir = std::filesystem::temp_directory_path() / ("dydnn_resume_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto data = tiny_data(48, 6);
  auto opts = quick(Method::Incremental, 2);
  torch::manual_seed(7);
  DynamicNet full(tiny_spec("incremental"));
  Trainer(full, opts).fit(data);

  opts.checkpoint_dir = dir.string();
  torch::manual_seed(7);
  DynamicNet first(tiny_spec("incremental"));
  {
    Trainer t(first, opts);
    // Interrupted after 3 of 8 epochs (mid-stage, so the optimiser state matters).
    t.set_normalization(dydnn::data::Normalization::fit(data.images));
    for (int e = 0; e < 3; ++e) run_epoch(t, data, opts.batch_size);
  }
  torch::manual_seed(99);  // a fresh process: different initial weights, overwritten by the checkpoint
  DynamicNet resumed(tiny_spec("incremental"));
  Trainer t(resumed, opts);
  REQUIRE(t.resume());
  CHECK(t.stage() == 1);
  CHECK(t.epoch() == 1);
  t.fit(data);
  const auto a = snapshot(full), b = snapshot(resumed);
  for (const auto& [name, tensor] : a) {
    INFO(name);
    CHECK(torch::equal(tensor, b.at(name)));
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("bad training input gives errors naming the value", "[train][errors]") {
  torch::manual_seed(8);
  DynamicNet net(tiny_spec("incremental"));
  auto data = tiny_data(16, 1);
  SECTION("labels out of range") {
    data.labels[3] = 7;
    Trainer t(net, quick(Method::Incremental));
    REQUIRE_THROWS_WITH(t.fit(data), Catch::Contains("label 7 is out of range (valid: 0..3"));
  }
  SECTION("channels that do not match the spec") {
    data.images = torch::zeros({16, 3, 8, 8}, torch::kUInt8);
    Trainer t(net, quick(Method::Incremental));
    REQUIRE_THROWS_WITH(t.fit(data), Catch::Contains("images have 3 channels but spec 'tiny' expects 1"));
  }
  SECTION("image size that does not match the spec") {
    data.images = torch::zeros({16, 1, 28, 28}, torch::kUInt8);
    Trainer t(net, quick(Method::Incremental));
    REQUIRE_THROWS_WITH(t.fit(data), Catch::Contains("images are 28x28 but spec 'tiny' expects 8x8"));
  }
  SECTION("an empty data set") {
    ImageDataset empty{torch::zeros({0, 1, 8, 8}, torch::kUInt8), torch::zeros({0}, torch::kLong)};
    Trainer t(net, quick(Method::Incremental));
    REQUIRE_THROWS_WITH(t.fit(empty), Catch::Contains("the data set is empty"));
  }
  SECTION("a schedule with the wrong number of stages") {
    auto o = quick(Method::Incremental);
    o.epochs = {1, 2, 3};
    REQUIRE_THROWS_WITH(Trainer(net, o), Catch::Contains("epochs: the schedule has 3 values but method 'incremental'") &&
                                             Catch::Contains("has 4 stages (A, AB, ABC, ABCD); give 1 or 4"));
    o.epochs = {1};
    o.lr = {0.1, 0.2};
    REQUIRE_THROWS_WITH(Trainer(net, o), Catch::Contains("lr: the schedule has 2 values"));
  }
  SECTION("nested on a net without islands") {
    REQUIRE_THROWS_WITH(Trainer(net, quick(Method::Nested)), Catch::Contains("connectivity 'incremental'"));
  }
  SECTION("an unknown method and bad options") {
    REQUIRE_THROWS_WITH(dydnn::train::method_from_string("slim"), Catch::Contains("valid: static, incremental"));
    auto o = quick(Method::Incremental);
    o.batch_size = 0;
    REQUIRE_THROWS_WITH(Trainer(net, o), Catch::Contains("batch_size 0 (valid: >= 1)"));
  }
}

TEST_CASE("evaluation after training steps sees the new weights and statistics, not cached ones", "[train]") {
  // LibTorch's optimisers write through `.data()`, which bumps no version counter; a
  // stale inference cache once made every evaluation after the first use old BN values.
  for (const auto& spec : {tiny_spec("incremental"), tiny_spec("fluid islands=0,1/2,3 cross=on", "per_config"),
                           tiny_spec("prefix", "prefix")}) {
    INFO(spec.connectivity);
    torch::manual_seed(10);
    DynamicNet net(spec);
    Trainer trainer(net, quick(Method::Static, 3));
    const auto data = tiny_data(64, 11);
    trainer.set_normalization(dydnn::data::Normalization::fit(data.images));
    const auto probe = trainer.normalization().apply(data.images.slice(0, 0, 16));
    while (!trainer.finished()) {
      outputs(net, probe);  // fills every inference cache
      run_epoch(trainer, data, 16);
    }
    const auto trained = outputs(net, probe);
    // A fresh net holding the same tensors has no caches at all.
    DynamicNet fresh(spec);
    {
      torch::NoGradGuard no_grad;
      const auto src = snapshot(net);
      for (auto& p : fresh->named_parameters()) p.value().copy_(src.at(p.key()));
      for (auto& b : fresh->named_buffers()) b.value().copy_(src.at(b.key()));
    }
    const auto reference = outputs(fresh, probe);
    for (const auto& c : net->configs()) {
      INFO(c.name());
      CHECK(torch::equal(trained.at(c), reference.at(c)));
    }
  }
}
