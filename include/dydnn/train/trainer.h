#pragma once
/// \file
/// `Trainer`: the one training implementation behind C++ and Python (design §4.1, §4.2),
/// with per-config evaluation, checkpoints that resume exactly, and a results JSON.

#include <dydnn/data/dataset.h>
#include <dydnn/nn/dynamic_net.h>
#include <dydnn/train/stages.h>

#include <ATen/core/Generator.h>
#include <torch/optim/optimizer.h>

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace dydnn {
namespace train {

/// How to train. Per-stage lists hold one value for every stage, or exactly one
/// value per stage of the method (checked by `Trainer`).
struct TrainOptions {
  Method method = Method::Incremental;
  /// Epochs per stage.
  std::vector<int64_t> epochs{2};
  /// Initial learning rate per stage; it decays with a cosine over the stage's epochs
  /// (epoch e of E uses lr * (1 + cos(pi e / E)) / 2) unless `cosine` is false.
  std::vector<double> lr{0.05};
  bool cosine = true;
  /// "sgd" (with `momentum`) or "adam".
  std::string optimizer = "sgd";
  double momentum = 0.9;
  /// L2 penalty, applied by the optimiser to the parameters it trains only.
  double weight_decay = 5e-4;
  int64_t batch_size = 64;
  /// Seeds the batch order of every epoch and the configs `sandwich` samples.
  uint64_t seed = 0;
  /// `sandwich`: random configs per step besides the largest and the smallest.
  int64_t sandwich_random = 2;
  /// `sandwich`: smaller configs learn the largest's soft predictions (in-place distillation).
  bool distill = true;
  /// Augments every training batch in `step` (`data::augment`): random left-right
  /// mirroring and shifts of up to `augment_shift` pixels, drawn per epoch from the seed.
  bool augment = false;
  int64_t augment_shift = 2;
  bool augment_flip = true;
  /// Joint training of early exits: the loss is `sum_e exit_weights[e] * loss(exit e)`
  /// over every exit of the net (the final head last). Empty = weight 1 for each exit
  /// (just the final head for a net without exits). Needs one weight per exit, each
  /// >= 0 and not all 0 (checked by `Trainer`).
  std::vector<double> exit_weights;
  /// Where `checkpoint.pt` is written after every epoch (and so after every stage); empty = nowhere.
  std::string checkpoint_dir;
  /// A progress line on stderr during `fit`.
  bool progress = true;

  /// Throws `ValueError` naming the bad option and its valid range.
  void validate() const;
};

/// Sums over examples, from which top-1, mean loss and total confidence follow.
struct Metrics {
  int64_t count = 0;
  int64_t correct = 0;
  double loss_sum = 0;
  /// The sum over examples of softmax(logits)[true class].
  double confidence_sum = 0;

  /// Adds a batch: `logits [N, classes]`, integer `labels [N]`.
  void add(const torch::Tensor& logits, const torch::Tensor& labels);
  double top1() const { return count ? static_cast<double>(correct) / static_cast<double>(count) : 0.0; }
  double loss() const { return count ? loss_sum / static_cast<double>(count) : 0.0; }
};

/// One config's results on a data set.
struct ConfigEvaluation {
  nn::Config config;
  Metrics metrics;
  /// The paper's normalised total confidence: this config's `confidence_sum` over the
  /// full config's (1 for the full config).
  double normalised_confidence = 0;
  int64_t macs = 0;
  int64_t parameters = 0;
};

/// One `ConfigEvaluation` per valid config of `net` from its accumulated `metrics`
/// (in `net.configs()` order): adds MACs, parameters and the normalised confidence.
/// Throws `ValueError` when the sizes differ.
std::vector<ConfigEvaluation> summarize_evaluations(const nn::DynamicNetImpl& net, const std::vector<Metrics>& metrics);

/// The metrics of `net` at `config` on `data` (eval mode, no autograd, batches of
/// `batch_size`; the net's training mode is restored). Images are normalised with `norm`.
Metrics evaluate_config(nn::DynamicNetImpl& net, const data::ImageDataset& data, const data::Normalization& norm,
                        nn::Config config, int64_t batch_size = 500);

/// Evaluates every valid config of `net` on `data` (eval mode, no autograd; the net's
/// training mode and config are restored). Images are normalised with `norm`.
std::vector<ConfigEvaluation> evaluate_configs(nn::DynamicNetImpl& net, const data::ImageDataset& data,
                                               const data::Normalization& norm, int64_t batch_size = 500);

/// What one epoch did.
struct EpochRecord {
  int64_t stage = 0;
  int64_t epoch = 0;
  std::string config;  ///< the stage's name
  double lr = 0;
  double loss = 0;             ///< mean training loss (of the stage's config)
  double train_top1 = 0;       ///< on the training batches, while training
  double validation_top1 = -1; ///< at the stage's config; -1 without validation data
  int64_t images = 0;
  double seconds = 0;
};

/// One optimiser step's outcome (sums over the batch, at the stage's main config).
struct StepResult {
  double loss_sum = 0;
  int64_t correct = 0;
  int64_t count = 0;
};

/// Runs a net at a config; `Trainer::step` calls it instead of the net when given
/// (Python passes a DistributedDataParallel wrapper through it).
using ForwardFn = std::function<torch::Tensor(const torch::Tensor&, nn::Config)>;

/// Trains a `DynamicNet` with one of the methods, stage by stage.
///
/// The position is (stage, epoch). Drive it with `fit` (a C++ loop over an in-memory
/// data set with a progress line), or from your own loop: `step` per batch, then
/// `end_epoch` — the Python `dydnn.train.Trainer` does the latter over any
/// `DataLoader`. Both paths run the same code per batch.
///
/// Example:
/// \code
///   auto spec = dydnn::nn::NetSpec::load("fashion_mnist_default.spec");
///   torch::manual_seed(0);
///   dydnn::nn::DynamicNet net(spec);
///   dydnn::train::TrainOptions opt;
///   opt.epochs = {2};
///   dydnn::train::Trainer trainer(net, opt);
///   trainer.fit(dydnn::data::fashion_mnist("train"));
///   auto table = dydnn::train::evaluate_configs(*net, dydnn::data::fashion_mnist("test"), trainer.normalization());
/// \endcode
/// Thread-safety: none; one trainer per net.
class Trainer {
 public:
  /// Plans the stages (`plan_stages`) and checks the options against them.
  Trainer(nn::DynamicNet net, TrainOptions options);

  nn::DynamicNet net() const { return net_; }
  const TrainOptions& options() const { return options_; }
  const std::vector<Stage>& stages() const { return stages_; }
  /// The current stage (`stages().size()` once finished) and the next epoch in it.
  size_t stage() const { return stage_; }
  int64_t epoch() const { return epoch_; }
  bool finished() const { return stage_ >= stages_.size(); }
  int64_t epochs_of(size_t stage) const;
  /// The learning rate of the current epoch.
  double current_lr() const;
  /// Whether the current stage has anything to train (late fusion with an additive
  /// head does not); `fit` and the Python loop skip such a stage.
  bool stage_is_empty() const;
  /// Skips the current stage (for an empty one), recording it.
  void skip_stage();

  /// The normalisation `fit` applies (fitted on the first data set it sees unless set).
  const data::Normalization& normalization() const { return normalization_; }
  void set_normalization(data::Normalization norm) { normalization_ = std::move(norm); }

  /// Freezes for the current stage and builds its optimiser when the stage changed;
  /// `step` calls it. Returns the parameters the stage trains.
  std::vector<torch::Tensor> prepare();
  /// The order of the current epoch over `n` examples (`data::epoch_order`).
  torch::Tensor epoch_order(int64_t n) const;
  /// One optimiser step on a normalised float batch `[N, C, H, W]` with labels `[N]`.
  /// `sandwich` runs the largest, the smallest and `sandwich_random` random configs.
  /// Throws `ValueError` when finished, for an empty stage, or for labels out of range.
  StepResult step(const torch::Tensor& images, const torch::Tensor& labels, const ForwardFn& forward = nullptr);
  /// Ends the current epoch: appends `record` (stage, epoch, config and lr filled in
  /// here), advances, and writes the checkpoint when `checkpoint_dir` is set.
  void end_epoch(EpochRecord record);

  /// Trains every remaining epoch on `train` (uint8 or float images), measuring
  /// `validation` at the stage's config after each epoch when it is non-empty.
  void fit(const data::ImageDataset& train, const data::ImageDataset& validation = {});

  const std::vector<EpochRecord>& history() const { return history_; }

  /// Writes net, optimiser, position, history and normalisation to `path` atomically
  /// (a temporary file, then a rename: a failed save leaves the previous file).
  void save_checkpoint(const std::string& path) const;
  /// Restores what `save_checkpoint` wrote. Throws `ValueError` when the file is not a
  /// checkpoint of this method and number of stages.
  void load_checkpoint(const std::string& path);
  /// `<checkpoint_dir>/checkpoint.pt`; empty without a directory.
  std::string checkpoint_path() const;
  /// Loads `checkpoint_path()` when it exists; returns whether it did.
  bool resume();

  /// The results as JSON: method, options, stages, history, and `evaluations`.
  std::string results_json(const std::vector<ConfigEvaluation>& evaluations, const std::string& dataset) const;

 private:
  torch::Tensor loss_at(const torch::Tensor& images, nn::Config config, const torch::Tensor& labels,
                        const torch::Tensor& soft_targets, const ForwardFn& forward, torch::Tensor* logits_out);
  void advance();

  nn::DynamicNet net_;
  TrainOptions options_;
  std::vector<Stage> stages_;
  size_t stage_ = 0;
  int64_t epoch_ = 0;
  std::vector<EpochRecord> history_;
  data::Normalization normalization_;
  // The optimiser of the stage it was built for; rebuilt when the position moves on.
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  size_t optimizer_stage_ = static_cast<size_t>(-1);
  std::vector<torch::Tensor> trainable_;  // what the optimiser's stage trains (frozen for it once)
  int64_t rng_epoch_ = -1;
  std::mt19937_64 rng_;
  at::Generator augment_generator_;
};

}  // namespace train
}  // namespace dydnn
