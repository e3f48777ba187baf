#include <dydnn/errors.h>
#include <dydnn/train/trainer.h>
#include <dydnn/version.h>

#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <unistd.h>

namespace dydnn {
namespace train {

void TrainOptions::validate() const {
  DYDNN_CHECK_VALUE(!epochs.empty(), "train", "epochs: the schedule is empty (give one value, or one per stage)");
  for (auto e : epochs) DYDNN_CHECK_VALUE(e >= 0, "train", "epochs: {} (valid: >= 0)", e);
  DYDNN_CHECK_VALUE(!lr.empty(), "train", "lr: the schedule is empty (give one value, or one per stage)");
  for (auto r : lr) DYDNN_CHECK_VALUE(r > 0 && std::isfinite(r), "train", "lr: {} (valid: > 0)", r);
  DYDNN_CHECK_VALUE(optimizer == "sgd" || optimizer == "adam", "train", "optimizer '{}' (valid: sgd, adam)", optimizer);
  DYDNN_CHECK_VALUE(momentum >= 0 && momentum < 1, "train", "momentum {} (valid: 0 <= momentum < 1)", momentum);
  DYDNN_CHECK_VALUE(weight_decay >= 0, "train", "weight_decay {} (valid: >= 0)", weight_decay);
  DYDNN_CHECK_VALUE(batch_size >= 1, "train", "batch_size {} (valid: >= 1)", batch_size);
  DYDNN_CHECK_VALUE(sandwich_random >= 0, "train", "sandwich_random {} (valid: >= 0)", sandwich_random);
  double weight_sum = 0;
  for (double w : exit_weights) {
    DYDNN_CHECK_VALUE(std::isfinite(w) && w >= 0, "train", "exit_weights: {} (valid: >= 0)", w);
    weight_sum += w;
  }
  DYDNN_CHECK_VALUE(exit_weights.empty() || weight_sum > 0, "train", "exit_weights: all {} are 0 (valid: some > 0)",
                    exit_weights.size());
  DYDNN_CHECK_VALUE(augment_shift >= 0, "train", "augment_shift {} (valid: >= 0)", augment_shift);
}

void Metrics::add(const torch::Tensor& logits, const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  DYDNN_CHECK_VALUE(logits.dim() == 2 && labels.dim() == 1 && logits.size(0) == labels.size(0), "train",
                    "Metrics.add: expected logits [N, classes] and labels [N] (got [{}] and [{}])",
                    fmt::join(logits.sizes(), ", "), fmt::join(labels.sizes(), ", "));
  const auto y = labels.to(torch::kLong);
  if (y.numel() > 0) {
    const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
    DYDNN_CHECK_VALUE(lo >= 0 && hi < logits.size(1), "train", "Metrics.add: label {} is out of range (valid: 0..{})",
                      lo < 0 ? lo : hi, logits.size(1) - 1);
  }
  const auto log_p = torch::log_softmax(logits.to(torch::kDouble), 1);
  const auto picked = log_p.gather(1, y.unsqueeze(1)).squeeze(1);
  loss_sum += -picked.sum().item<double>();
  confidence_sum += picked.exp().sum().item<double>();
  correct += logits.argmax(1).eq(y).sum().item<int64_t>();
  count += labels.size(0);
}

std::vector<ConfigEvaluation> summarize_evaluations(const nn::DynamicNetImpl& net, const std::vector<Metrics>& metrics) {
  const auto& configs = net.configs();
  DYDNN_CHECK_VALUE(metrics.size() == configs.size(), "train",
                    "summarize_evaluations: {} metrics for the {} valid configs of net '{}'", metrics.size(),
                    configs.size(), net.spec().name);
  std::vector<ConfigEvaluation> out;
  for (size_t k = 0; k < configs.size(); ++k)
    out.push_back(ConfigEvaluation{configs[k], metrics[k], 0, net.macs(configs[k]), net.parameter_count(configs[k])});
  const int64_t full = net.connectivity().index_of(net.connectivity().full_config());
  const double reference = full >= 0 ? out[full].metrics.confidence_sum : 0.0;
  for (auto& e : out) e.normalised_confidence = reference > 0 ? e.metrics.confidence_sum / reference : 0.0;
  return out;
}

Metrics evaluate_config(nn::DynamicNetImpl& net, const data::ImageDataset& data, const data::Normalization& norm,
                        nn::Config config, int64_t batch_size) {
  data::check_dataset(data, net.spec(), "evaluation data");
  DYDNN_CHECK_VALUE(batch_size >= 1, "train", "evaluate: batch_size {} (valid: >= 1)", batch_size);
  net.connectivity().check_valid(config, "evaluate");
  const bool was_training = net.is_training();
  net.eval();
  torch::NoGradGuard no_grad;
  Metrics metrics;
  for (int64_t b = 0; b < data.size(); b += batch_size) {
    const int64_t n = std::min(batch_size, data.size() - b);
    metrics.add(net.forward(norm.apply(data.images.slice(0, b, b + n)), config), data.labels.slice(0, b, b + n));
  }
  net.train(was_training);
  return metrics;
}

std::vector<ConfigEvaluation> evaluate_configs(nn::DynamicNetImpl& net, const data::ImageDataset& data,
                                               const data::Normalization& norm, int64_t batch_size) {
  std::vector<Metrics> metrics;
  for (const auto& c : net.configs()) metrics.push_back(evaluate_config(net, data, norm, c, batch_size));
  return summarize_evaluations(net, metrics);
}

Trainer::Trainer(nn::DynamicNet net, TrainOptions options) : net_(std::move(net)), options_(std::move(options)) {
  DYDNN_CHECK_VALUE(!net_.is_empty(), "train", "Trainer: the net is empty");
  options_.validate();
  stages_ = plan_stages(*net_, options_.method);
  const size_t n = stages_.size();
  auto names = [&] {
    std::vector<std::string> v;
    for (const auto& s : stages_) v.push_back(s.name);
    return fmt::format("{}", fmt::join(v, ", "));
  };
  DYDNN_CHECK_VALUE(options_.epochs.size() == 1 || options_.epochs.size() == n, "train",
                    "epochs: the schedule has {} values but method '{}' on net '{}' has {} stages ({}); give 1 or {}",
                    options_.epochs.size(), to_string(options_.method), net_->spec().name, n, names(), n);
  DYDNN_CHECK_VALUE(options_.lr.size() == 1 || options_.lr.size() == n, "train",
                    "lr: the schedule has {} values but method '{}' on net '{}' has {} stages ({}); give 1 or {}",
                    options_.lr.size(), to_string(options_.method), net_->spec().name, n, names(), n);
  DYDNN_CHECK_VALUE(options_.exit_weights.empty() || static_cast<int64_t>(options_.exit_weights.size()) == net_->num_exits(),
                    "train", "exit_weights: {} values but net '{}' has {} exit(s) (the final head included); give {}",
                    options_.exit_weights.size(), net_->spec().name, net_->num_exits(), net_->num_exits());
}

int64_t Trainer::epochs_of(size_t stage) const {
  DYDNN_CHECK_INDEX(stage < stages_.size(), "train", "stage {} is out of range (valid: 0..{})", stage,
                    stages_.size() - 1);
  return options_.epochs.size() == 1 ? options_.epochs[0] : options_.epochs[stage];
}

double Trainer::current_lr() const {
  if (finished()) return 0.0;
  const double base = options_.lr.size() == 1 ? options_.lr[0] : options_.lr[stage_];
  const int64_t total = epochs_of(stage_);
  if (!options_.cosine || total <= 1) return base;
  return base * 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(epoch_) / static_cast<double>(total)));
}

bool Trainer::stage_is_empty() const {
  return !finished() && stage_parameters(*net_, stages_, stage_).empty();
}

void Trainer::skip_stage() {
  DYDNN_CHECK_VALUE(!finished(), "train", "skip_stage: training is finished");
  history_.push_back(EpochRecord{static_cast<int64_t>(stage_), -1, stages_[stage_].name, 0, 0, 0, -1, 0, 0});
  ++stage_;
  epoch_ = 0;
  optimizer_.reset();
}

std::vector<torch::Tensor> Trainer::prepare() {
  DYDNN_CHECK_VALUE(!finished(), "train", "Trainer: training is finished ({} stages done)", stages_.size());
  if (!optimizer_ || optimizer_stage_ != stage_) {
    // Freezing walks every earlier config's parameters: once per stage, not per step.
    auto params = freeze_for_stage(*net_, stages_, stage_);
    DYDNN_CHECK_VALUE(!params.empty(), "train",
                      "stage {} ({}) has nothing to train: every parameter it uses was trained by an earlier stage "
                      "(skip it with skip_stage())",
                      stage_, stages_[stage_].name);
    trainable_ = params;
    if (options_.optimizer == "adam")
      optimizer_ = std::make_unique<torch::optim::Adam>(
          params, torch::optim::AdamOptions(current_lr()).weight_decay(options_.weight_decay));
    else
      optimizer_ = std::make_unique<torch::optim::SGD>(
          params, torch::optim::SGDOptions(current_lr()).momentum(options_.momentum).weight_decay(options_.weight_decay));
    optimizer_stage_ = stage_;
  }
  const auto& params = trainable_;
  for (auto& group : optimizer_->param_groups()) group.options().set_lr(current_lr());
  const int64_t position = static_cast<int64_t>(stage_) * 1000003 + epoch_;
  if (rng_epoch_ != position) {
    const uint64_t seed = data::derive_seed(options_.seed, static_cast<int64_t>(stage_), epoch_);
    rng_.seed(seed);
    augment_generator_ = at::detail::createCPUGenerator(seed ^ 0x5bd1e995ULL);
    rng_epoch_ = position;
  }
  net_->train();
  return params;
}

torch::Tensor Trainer::epoch_order(int64_t n) const {
  return data::epoch_order(n, options_.seed, static_cast<int64_t>(stage_), epoch_);
}

torch::Tensor Trainer::loss_at(const torch::Tensor& images, nn::Config config, const torch::Tensor& labels,
                               const torch::Tensor& soft_targets, const ForwardFn& forward, torch::Tensor* logits_out) {
  auto loss_of = [&](const torch::Tensor& logits) {
    if (soft_targets.defined()) return -(soft_targets * torch::log_softmax(logits, 1)).sum(1).mean();
    return torch::nn::functional::cross_entropy(logits, labels);
  };
  if (net_->num_exits() > 1) {
    DYDNN_CHECK_VALUE(!forward, "train",
                      "step: a custom forward (DDP) runs only the final head; net '{}' has {} exits to train jointly",
                      net_->spec().name, net_->num_exits());
    const auto all = net_->forward_exits(images, config);
    if (logits_out) *logits_out = all.back();
    torch::Tensor loss;
    for (size_t e = 0; e < all.size(); ++e) {
      const double w = options_.exit_weights.empty() ? 1.0 : options_.exit_weights[e];
      if (w == 0) continue;
      auto term = loss_of(all[e]) * w;
      loss = loss.defined() ? loss + term : term;
    }
    return loss;
  }
  torch::Tensor logits = forward ? forward(images, config) : net_->forward(images, config);
  if (logits_out) *logits_out = logits;
  return loss_of(logits);
}

StepResult Trainer::step(const torch::Tensor& images, const torch::Tensor& labels, const ForwardFn& forward) {
  prepare();
  const auto& spec = net_->spec();
  DYDNN_CHECK_VALUE(images.defined() && images.dim() == 4 && images.size(1) == spec.in_channels &&
                        images.size(2) == spec.height && images.size(3) == spec.width,
                    "train", "step: images must be [N, {}, {}, {}] for spec '{}' (got [{}])", spec.in_channels,
                    spec.height, spec.width, spec.name, fmt::join(images.sizes(), ", "));
  DYDNN_CHECK_VALUE(labels.defined() && labels.dim() == 1 && labels.size(0) == images.size(0) && images.size(0) > 0,
                    "train", "step: labels must be [N] with N = {} > 0 (got [{}])", images.size(0),
                    fmt::join(labels.sizes(), ", "));
  const auto y = labels.to(torch::kLong);
  const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
  DYDNN_CHECK_VALUE(lo >= 0 && hi < spec.classes, "train", "step: label {} is out of range (valid: 0..{})",
                    lo < 0 ? lo : hi, spec.classes - 1);
  const Stage& stage = stages_[stage_];
  const torch::Tensor batch =
      options_.augment ? data::augment(images, options_.augment_shift, options_.augment_flip, augment_generator_) : images;
  // Gradients are dropped, not zeroed: a sandwich step leaves the parameters of configs
  // it did not sample without a gradient, so SGD must not apply weight decay and momentum
  // to them (and a resumed run, whose gradients start empty, stays bitwise the same).
  for (auto& group : optimizer_->param_groups())
    for (auto& p : group.params()) p.mutable_grad().reset();
  torch::Tensor logits;
  torch::Tensor loss = loss_at(batch, stage.config, y, {}, forward, &logits);
  if (options_.method != Method::Sandwich) {
    loss.backward();
  } else {
    // The largest config, then the smallest and random ones, which learn the largest's
    // predictions when distilling. The losses are averaged, so a sandwich step moves the
    // weights as far as a single-config step at the same learning rate (summing them
    // diverged at lr 0.05 here).
    std::vector<nn::Config> extra{stage.configs.front()};
    if (stage.configs.size() > 2) {
      std::uniform_int_distribution<size_t> pick(1, stage.configs.size() - 2);
      for (int64_t k = 0; k < options_.sandwich_random; ++k) extra.push_back(stage.configs[pick(rng_)]);
    }
    const double scale = 1.0 / static_cast<double>(extra.size() + 1);
    (loss * scale).backward();
    torch::Tensor soft;
    if (options_.distill) soft = torch::softmax(logits.detach(), 1);
    for (const auto& c : extra) (loss_at(batch, c, y, soft, forward, nullptr) * scale).backward();
  }
  optimizer_->step();
  net_->invalidate_caches();  // the step wrote through `.data()`, which caches cannot see
  torch::NoGradGuard no_grad;
  return StepResult{loss.item<double>() * static_cast<double>(images.size(0)),
                    logits.argmax(1).eq(y).sum().item<int64_t>(), images.size(0)};
}

void Trainer::advance() {
  if (++epoch_ >= epochs_of(stage_)) {
    ++stage_;
    epoch_ = 0;
    optimizer_.reset();
  }
}

void Trainer::end_epoch(EpochRecord record) {
  DYDNN_CHECK_VALUE(!finished(), "train", "end_epoch: training is finished");
  record.stage = static_cast<int64_t>(stage_);
  record.epoch = epoch_;
  record.config = stages_[stage_].name;
  record.lr = current_lr();
  history_.push_back(record);
  advance();
  while (!finished() && epochs_of(stage_) == 0) {
    ++stage_;
    epoch_ = 0;
  }
  if (!options_.checkpoint_dir.empty()) save_checkpoint(checkpoint_path());
}

namespace {

bool stderr_is_terminal() { return isatty(fileno(stderr)) != 0; }

}  // namespace

void Trainer::fit(const data::ImageDataset& train, const data::ImageDataset& validation) {
  data::check_dataset(train, net_->spec(), "training data");
  if (validation.size() > 0) data::check_dataset(validation, net_->spec(), "validation data");
  if (normalization_.identity() && train.images.scalar_type() == torch::kUInt8)
    normalization_ = data::Normalization::fit(train.images);
  const int64_t n = train.size();
  const bool live = options_.progress && stderr_is_terminal();
  while (!finished()) {
    if (epochs_of(stage_) == 0) {
      ++stage_;
      continue;
    }
    if (stage_is_empty()) {
      if (options_.progress)
        fmt::print(stderr, "[dydnn] stage {}/{} ({}): nothing new to train, skipped\n", stage_ + 1, stages_.size(),
                   stages_[stage_].name);
      skip_stage();
      continue;
    }
    prepare();
    const auto order = epoch_order(n);
    const auto start = std::chrono::steady_clock::now();
    auto last_print = start;
    StepResult sum;
    for (int64_t b = 0; b < n; b += options_.batch_size) {
      const auto index = order.slice(0, b, std::min(n, b + options_.batch_size));
      const auto r = step(normalization_.apply(train.images.index_select(0, index)), train.labels.index_select(0, index));
      sum.loss_sum += r.loss_sum;
      sum.correct += r.correct;
      sum.count += r.count;
      const auto now = std::chrono::steady_clock::now();
      if (live && now - last_print > std::chrono::milliseconds(500)) {
        last_print = now;
        fmt::print(stderr, "\r[dydnn] stage {}/{} ({}) epoch {}/{}: {:5.1f}% loss {:.4f} acc {:.4f}", stage_ + 1,
                   stages_.size(), stages_[stage_].name, epoch_ + 1, epochs_of(stage_),
                   100.0 * static_cast<double>(sum.count) / static_cast<double>(n),
                   sum.loss_sum / static_cast<double>(sum.count),
                   static_cast<double>(sum.correct) / static_cast<double>(sum.count));
      }
    }
    EpochRecord record;
    record.loss = sum.loss_sum / static_cast<double>(sum.count);
    record.train_top1 = static_cast<double>(sum.correct) / static_cast<double>(sum.count);
    record.images = sum.count;
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (validation.size() > 0)
      record.validation_top1 = evaluate_config(*net_, validation, normalization_, stages_[stage_].config).top1();
    if (options_.progress)
      fmt::print(stderr, "{}[dydnn] stage {}/{} ({}) epoch {}/{}: loss {:.4f} acc {:.4f}{} lr {:.4g} {:.1f}s\n",
                 live ? "\r" : "", stage_ + 1, stages_.size(), stages_[stage_].name, epoch_ + 1, epochs_of(stage_),
                 record.loss, record.train_top1,
                 record.validation_top1 >= 0 ? fmt::format(" val {:.4f}", record.validation_top1) : "", current_lr(),
                 record.seconds);
    end_epoch(record);
  }
}

std::string Trainer::checkpoint_path() const {
  return options_.checkpoint_dir.empty() ? "" : (std::filesystem::path(options_.checkpoint_dir) / "checkpoint.pt").string();
}

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<int>(c));
        else out += c;
    }
  }
  return out + "\"";
}

std::string json_number(double v) { return std::isfinite(v) ? fmt::format("{:.10g}", v) : "null"; }

std::string history_json(const std::vector<EpochRecord>& history) {
  std::vector<std::string> rows;
  for (const auto& r : history)
    rows.push_back(fmt::format(
        "{{\"stage\": {}, \"epoch\": {}, \"config\": {}, \"lr\": {}, \"loss\": {}, \"train_top1\": {}, "
        "\"validation_top1\": {}, \"images\": {}, \"seconds\": {}}}",
        r.stage, r.epoch, json_string(r.config), json_number(r.lr), json_number(r.loss), json_number(r.train_top1),
        r.validation_top1 < 0 ? "null" : json_number(r.validation_top1), r.images, json_number(r.seconds)));
  return fmt::format("[{}]", fmt::join(rows, ", "));
}

template <typename T>
std::string json_list(const std::vector<T>& values) {
  std::vector<std::string> v;
  for (const auto& x : values) v.push_back(json_number(static_cast<double>(x)));
  return fmt::format("[{}]", fmt::join(v, ", "));
}

}  // namespace

void Trainer::save_checkpoint(const std::string& path) const {
  DYDNN_CHECK_VALUE(!path.empty(), "train", "save_checkpoint: empty path");
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive net_archive;
  net_->save(net_archive);
  archive.write("net", net_archive);
  if (optimizer_ && optimizer_stage_ == stage_) {
    torch::serialize::OutputArchive opt_archive;
    optimizer_->save(opt_archive);
    archive.write("optimizer", opt_archive);
  }
  archive.write("method", c10::IValue(to_string(options_.method)));
  archive.write("stages", torch::tensor(static_cast<int64_t>(stages_.size())));
  archive.write("position", torch::tensor({static_cast<int64_t>(stage_), epoch_}));
  // The history as numbers, one row per record, and the stage names as one string.
  std::vector<double> rows;
  std::vector<std::string> names;
  for (const auto& r : history_) {
    rows.insert(rows.end(), {static_cast<double>(r.stage), static_cast<double>(r.epoch), r.lr, r.loss, r.train_top1,
                             r.validation_top1, static_cast<double>(r.images), r.seconds});
    names.push_back(r.config);
  }
  archive.write("history", torch::tensor(rows, torch::kDouble).view({-1, 8}));
  archive.write("history_names", c10::IValue(fmt::format("{}", fmt::join(names, "\n"))));
  archive.write("norm_mean", torch::tensor(normalization_.mean, torch::kDouble));
  archive.write("norm_std", torch::tensor(normalization_.std, torch::kDouble));
  archive.write("spec", c10::IValue(net_->spec().to_text()));
  const std::string tmp = path + ".tmp";
  try {
    archive.save_to(tmp);
    std::filesystem::rename(tmp, path);
  } catch (const std::exception& e) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
    DYDNN_CHECK_VALUE(false, "train", "save_checkpoint: could not write {} ({}); the previous file is unchanged", path,
                      torch_error ? torch_error->what_without_backtrace() : e.what());
  }
}

void Trainer::load_checkpoint(const std::string& path) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const std::exception& e) {
    const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
    DYDNN_CHECK_VALUE(false, "train", "load_checkpoint: {} is not a readable dydnn checkpoint ({})", path,
                      std::string(torch_error ? torch_error->what_without_backtrace() : e.what()).substr(0, 200));
  }
  c10::IValue method, spec_text;
  archive.read("method", method);
  archive.read("spec", spec_text);
  torch::Tensor stages, position, mean, std_dev;
  archive.read("stages", stages);
  archive.read("position", position);
  DYDNN_CHECK_VALUE(method.toStringRef() == to_string(options_.method) && stages.item<int64_t>() ==
                                                                            static_cast<int64_t>(stages_.size()),
                    "train", "load_checkpoint: {} was written by method '{}' with {} stages; this trainer runs '{}' with {}",
                    path, method.toStringRef(), stages.item<int64_t>(), to_string(options_.method), stages_.size());
  DYDNN_CHECK_VALUE(spec_text.toStringRef() == net_->spec().to_text(), "train",
                    "load_checkpoint: {} holds a different spec than net '{}'", path, net_->spec().name);
  torch::serialize::InputArchive net_archive;
  archive.read("net", net_archive);
  net_->load(net_archive);
  net_->invalidate_caches();
  stage_ = static_cast<size_t>(position[0].item<int64_t>());
  epoch_ = position[1].item<int64_t>();
  archive.read("norm_mean", mean);
  archive.read("norm_std", std_dev);
  normalization_.mean.assign(mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel());
  normalization_.std.assign(std_dev.data_ptr<double>(), std_dev.data_ptr<double>() + std_dev.numel());
  torch::Tensor rows;
  c10::IValue names;
  archive.read("history", rows);
  archive.read("history_names", names);
  history_.clear();
  std::stringstream name_stream(names.toStringRef());
  for (int64_t k = 0; k < rows.size(0); ++k) {
    const auto row = rows[k];
    EpochRecord r;
    std::getline(name_stream, r.config);
    r.stage = static_cast<int64_t>(row[0].item<double>());
    r.epoch = static_cast<int64_t>(row[1].item<double>());
    r.lr = row[2].item<double>();
    r.loss = row[3].item<double>();
    r.train_top1 = row[4].item<double>();
    r.validation_top1 = row[5].item<double>();
    r.images = static_cast<int64_t>(row[6].item<double>());
    r.seconds = row[7].item<double>();
    history_.push_back(r);
  }
  optimizer_.reset();
  rng_epoch_ = -1;
  if (!finished()) {
    torch::serialize::InputArchive opt_archive;
    if (archive.try_read("optimizer", opt_archive) && !stage_is_empty()) {
      prepare();
      optimizer_->load(opt_archive);
    }
  }
}

bool Trainer::resume() {
  const std::string path = checkpoint_path();
  if (path.empty() || !std::filesystem::exists(path)) return false;
  load_checkpoint(path);
  return true;
}

std::string Trainer::results_json(const std::vector<ConfigEvaluation>& evaluations, const std::string& dataset) const {
  std::vector<std::string> stages, evals;
  for (size_t s = 0; s < stages_.size(); ++s) {
    std::vector<std::string> configs;
    for (const auto& c : stages_[s].configs) configs.push_back(json_string(c.name()));
    stages.push_back(fmt::format("{{\"name\": {}, \"config\": {}, \"configs\": [{}], \"epochs\": {}, \"trained\": {}}}",
                                 json_string(stages_[s].name), json_string(stages_[s].config.name()),
                                 fmt::join(configs, ", "), epochs_of(s),
                                 stage_parameters(*net_, stages_, s).size()));
  }
  for (const auto& e : evaluations)
    evals.push_back(fmt::format(
        "{{\"config\": {}, \"groups\": {}, \"top1\": {}, \"loss\": {}, \"confidence_sum\": {}, "
        "\"normalised_confidence\": {}, \"examples\": {}, \"macs\": {}, \"parameters\": {}}}",
        json_string(e.config.name()), json_list(e.config.groups()), json_number(e.metrics.top1()),
        json_number(e.metrics.loss()), json_number(e.metrics.confidence_sum), json_number(e.normalised_confidence),
        e.metrics.count, e.macs, e.parameters));
  double seconds = 0;
  int64_t images = 0;
  for (const auto& r : history_) {
    seconds += r.seconds;
    images += r.images;
  }
  const auto& o = options_;
  return fmt::format(
      "{{\n  \"format\": \"dydnn-results/1\",\n  \"dydnn_version\": {},\n  \"torch_version\": {},\n"
      "  \"method\": {},\n  \"spec\": {},\n  \"spec_text\": {},\n  \"connectivity\": {},\n  \"dataset\": {},\n"
      "  \"options\": {{\"epochs\": {}, \"lr\": {}, \"cosine\": {}, \"optimizer\": {}, \"momentum\": {}, "
      "\"weight_decay\": {}, \"batch_size\": {}, \"seed\": {}, \"sandwich_random\": {}, \"distill\": {}, \"augment\": {}, \"augment_shift\": {}, \"augment_flip\": {}, \"exit_weights\": {}}},\n"
      "  \"normalization\": {{\"mean\": {}, \"std\": {}}},\n"
      "  \"budget\": {{\"images\": {}, \"seconds\": {}, \"threads\": {}}},\n"
      "  \"stages\": [{}],\n  \"history\": {},\n  \"evaluations\": [\n    {}\n  ]\n}}\n",
      json_string(DYDNN_VERSION_STRING), json_string(TORCH_VERSION), json_string(to_string(o.method)),
      json_string(net_->spec().name), json_string(net_->spec().to_text()), json_string(net_->connectivity().name()),
      json_string(dataset), json_list(o.epochs), json_list(o.lr), o.cosine ? "true" : "false",
      json_string(o.optimizer), json_number(o.momentum), json_number(o.weight_decay), o.batch_size, o.seed,
      o.sandwich_random, o.distill ? "true" : "false", o.augment ? "true" : "false", o.augment_shift,
      o.augment_flip ? "true" : "false", json_list(o.exit_weights), json_list(normalization_.mean), json_list(normalization_.std),
      images, json_number(seconds), at::get_num_threads(), fmt::join(stages, ", "), history_json(history_),
      fmt::join(evals, ",\n    "));
}

}  // namespace train
}  // namespace dydnn
