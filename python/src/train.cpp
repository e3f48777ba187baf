// Bindings of the training core (dydnn::train, dydnn::data). The Python package
// (python/dydnn/train.py) drives these per batch, so Python and C++ train with the same code.
#include "bindings.h"

#include <dydnn/train/trainer.h>

#include <pybind11/functional.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

namespace py = pybind11;

namespace dydnn {
namespace python {

namespace {

using nn::DynamicNetImpl;
using train::EpochRecord;
using train::Trainer;
using train::TrainOptions;

py::dict to_dict(const EpochRecord& r) {
  py::dict d;
  d["stage"] = r.stage;
  d["epoch"] = r.epoch;
  d["config"] = r.config;
  d["lr"] = r.lr;
  d["loss"] = r.loss;
  d["train_top1"] = r.train_top1;
  d["validation_top1"] = r.validation_top1 < 0 ? py::object(py::none()) : py::object(py::float_(r.validation_top1));
  d["images"] = r.images;
  d["seconds"] = r.seconds;
  return d;
}

data::ImageDataset to_dataset(const torch::Tensor& images, const torch::Tensor& labels) {
  return data::ImageDataset{images, labels};
}

}  // namespace

void bind_train(py::module_& m) {
  py::class_<data::Normalization>(m, "Normalization")
      .def(py::init([](std::vector<double> mean, std::vector<double> std) {
             return data::Normalization{std::move(mean), std::move(std)};
           }),
           py::arg("mean") = std::vector<double>{}, py::arg("std") = std::vector<double>{})
      .def_static("fit", &data::Normalization::fit, py::arg("images"))
      .def("apply", &data::Normalization::apply, py::arg("images"))
      .def_readwrite("mean", &data::Normalization::mean)
      .def_readwrite("std", &data::Normalization::std)
      .def_property_readonly("identity", &data::Normalization::identity)
      .def("__repr__", [](const data::Normalization& n) {
        return fmt::format("Normalization(mean=[{}], std=[{}])", fmt::join(n.mean, ", "), fmt::join(n.std, ", "));
      });

  m.def("read_idx_cpp", &data::read_idx, py::arg("path"), "C++ IDX reader: a uint8 tensor of the file's shape.");
  m.def(
      "load_idx_dataset",
      [](const std::string& images, const std::string& labels, int64_t limit) {
        auto d = data::load_idx_dataset(images, labels, limit);
        return py::make_tuple(d.images, d.labels);
      },
      py::arg("images_path"), py::arg("labels_path"), py::arg("limit") = -1);
  m.def(
      "fashion_mnist_cpp",
      [](const std::string& split, int64_t limit, const std::string& root) {
        auto d = data::fashion_mnist(split, limit, root);
        return py::make_tuple(d.images, d.labels);
      },
      py::arg("split"), py::arg("limit") = -1, py::arg("root") = std::string(data::kFashionMnistRoot));
  m.def(
      "check_dataset",
      [](const torch::Tensor& images, const torch::Tensor& labels, const nn::NetSpec& spec, const std::string& what) {
        data::check_dataset(to_dataset(images, labels), spec, what);
      },
      py::arg("images"), py::arg("labels"), py::arg("spec"), py::arg("what") = "data");
  m.def(
      "split_dataset",
      [](const torch::Tensor& images, const torch::Tensor& labels, double fraction, uint64_t seed) {
        auto [a, b] = data::split(to_dataset(images, labels), fraction, seed);
        return py::make_tuple(a.images, a.labels, b.images, b.labels);
      },
      py::arg("images"), py::arg("labels"), py::arg("validation_fraction"), py::arg("seed"));
  m.def(
      "augment",
      [](const torch::Tensor& images, int64_t max_shift, bool flip, uint64_t seed) {
        auto generator = at::detail::createCPUGenerator(seed);
        return data::augment(images, max_shift, flip, generator);
      },
      py::arg("images"), py::arg("max_shift") = 2, py::arg("flip") = true, py::arg("seed") = 0,
      "Random mirroring and shifts of a float batch [N, C, H, W] (the trainer's augmentation).");
  m.def("derive_seed", &data::derive_seed, py::arg("seed"), py::arg("stage"), py::arg("epoch"));

  py::class_<train::Metrics>(m, "Metrics")
      .def(py::init<>())
      .def("add", &train::Metrics::add, py::arg("logits"), py::arg("labels"))
      .def_readonly("count", &train::Metrics::count)
      .def_readonly("correct", &train::Metrics::correct)
      .def_readonly("loss_sum", &train::Metrics::loss_sum)
      .def_readonly("confidence_sum", &train::Metrics::confidence_sum)
      .def_property_readonly("top1", &train::Metrics::top1)
      .def_property_readonly("loss", &train::Metrics::loss);

  py::class_<train::ConfigEvaluation>(m, "ConfigEvaluation")
      .def_readonly("config", &train::ConfigEvaluation::config)
      .def_readonly("metrics", &train::ConfigEvaluation::metrics)
      .def_readonly("normalised_confidence", &train::ConfigEvaluation::normalised_confidence)
      .def_readonly("macs", &train::ConfigEvaluation::macs)
      .def_readonly("parameters", &train::ConfigEvaluation::parameters);

  m.def(
      "evaluate_config",
      [](DynamicNetImpl& net, const torch::Tensor& images, const torch::Tensor& labels,
         const data::Normalization& norm, const py::object& config, int64_t batch_size) {
        const auto c = to_config(config, net.connectivity().num_groups());
        py::gil_scoped_release release;
        return train::evaluate_config(net, to_dataset(images, labels), norm, c, batch_size);
      },
      py::arg("net"), py::arg("images"), py::arg("labels"), py::arg("normalization"), py::arg("config"),
      py::arg("batch_size") = 500);
  m.def("summarize_evaluations", &train::summarize_evaluations, py::arg("net"), py::arg("metrics"));
  m.def(
      "evaluate_configs",
      [](DynamicNetImpl& net, const torch::Tensor& images, const torch::Tensor& labels,
         const data::Normalization& norm, int64_t batch_size) {
        py::gil_scoped_release release;
        return train::evaluate_configs(net, to_dataset(images, labels), norm, batch_size);
      },
      py::arg("net"), py::arg("images"), py::arg("labels"), py::arg("normalization"), py::arg("batch_size") = 500);

  py::class_<train::Stage>(m, "Stage")
      .def_readonly("config", &train::Stage::config)
      .def_readonly("configs", &train::Stage::configs)
      .def_readonly("name", &train::Stage::name)
      .def("__repr__", [](const train::Stage& s) { return fmt::format("Stage({})", s.name); });

  m.def("method_from_string", [](const std::string& s) { return train::to_string(train::method_from_string(s)); },
        py::arg("name"), "Checks a method name; returns it (ValueError listing the valid names otherwise).");
  m.def(
      "plan_stages",
      [](const DynamicNetImpl& net, const std::string& method) {
        return train::plan_stages(net, train::method_from_string(method));
      },
      py::arg("net"), py::arg("method"));
  m.def("stage_parameters", &train::stage_parameters, py::arg("net"), py::arg("stages"), py::arg("index"));
  m.def("freeze_for_stage", &train::freeze_for_stage, py::arg("net"), py::arg("stages"), py::arg("index"));
  m.def("unfreeze_all", &train::unfreeze_all, py::arg("net"));

  py::class_<Trainer>(m, "Trainer")
      .def(py::init([](std::shared_ptr<DynamicNetImpl> net, const std::string& method, std::vector<int64_t> epochs,
                       std::vector<double> lr, bool cosine, const std::string& optimizer, double momentum,
                       double weight_decay, int64_t batch_size, uint64_t seed, int64_t sandwich_random, bool distill,
                       const std::string& checkpoint_dir, bool progress, bool augment, int64_t augment_shift,
                       bool augment_flip, std::vector<double> exit_weights) {
             TrainOptions o;
             o.method = train::method_from_string(method);
             o.epochs = std::move(epochs);
             o.lr = std::move(lr);
             o.cosine = cosine;
             o.optimizer = optimizer;
             o.momentum = momentum;
             o.weight_decay = weight_decay;
             o.batch_size = batch_size;
             o.seed = seed;
             o.sandwich_random = sandwich_random;
             o.distill = distill;
             o.checkpoint_dir = checkpoint_dir;
             o.progress = progress;
             o.augment = augment;
             o.augment_shift = augment_shift;
             o.augment_flip = augment_flip;
             o.exit_weights = std::move(exit_weights);
             return std::make_unique<Trainer>(nn::DynamicNet(std::move(net)), o);
           }),
           py::arg("net"), py::arg("method"), py::arg("epochs"), py::arg("lr"), py::arg("cosine"), py::arg("optimizer"),
           py::arg("momentum"), py::arg("weight_decay"), py::arg("batch_size"), py::arg("seed"),
           py::arg("sandwich_random"), py::arg("distill"), py::arg("checkpoint_dir"), py::arg("progress"),
           py::arg("augment") = false, py::arg("augment_shift") = 2, py::arg("augment_flip") = true,
           py::arg("exit_weights") = std::vector<double>{})
      .def_property_readonly("stages", &Trainer::stages)
      .def_property_readonly("stage", &Trainer::stage)
      .def_property_readonly("epoch", &Trainer::epoch)
      .def_property_readonly("finished", &Trainer::finished)
      .def_property_readonly("current_lr", &Trainer::current_lr)
      .def_property_readonly("batch_size", [](const Trainer& t) { return t.options().batch_size; })
      .def_property_readonly("seed", [](const Trainer& t) { return t.options().seed; })
      .def_property_readonly("method", [](const Trainer& t) { return train::to_string(t.options().method); })
      .def("epochs_of", &Trainer::epochs_of, py::arg("stage"))
      .def("stage_is_empty", &Trainer::stage_is_empty)
      .def("skip_stage", &Trainer::skip_stage)
      .def_property("normalization", &Trainer::normalization, &Trainer::set_normalization)
      .def("prepare", &Trainer::prepare)
      .def("epoch_order", &Trainer::epoch_order, py::arg("n"))
      .def(
          "step",
          [](Trainer& t, const torch::Tensor& images, const torch::Tensor& labels, const py::object& forward) {
            train::ForwardFn fn;
            if (!forward.is_none()) fn = forward.cast<train::ForwardFn>();
            train::StepResult r;
            {
              py::gil_scoped_release release;  // the forward callback takes the GIL back itself
              r = t.step(images, labels, fn);
            }
            return py::make_tuple(r.loss_sum, r.correct, r.count);
          },
          py::arg("images"), py::arg("labels"), py::arg("forward") = py::none())
      .def(
          "end_epoch",
          [](Trainer& t, double loss, double train_top1, py::object validation_top1, int64_t images, double seconds) {
            EpochRecord r;
            r.loss = loss;
            r.train_top1 = train_top1;
            r.validation_top1 = validation_top1.is_none() ? -1.0 : validation_top1.cast<double>();
            r.images = images;
            r.seconds = seconds;
            t.end_epoch(r);
          },
          py::arg("loss"), py::arg("train_top1"), py::arg("validation_top1"), py::arg("images"), py::arg("seconds"))
      .def(
          "fit",
          [](Trainer& t, const torch::Tensor& images, const torch::Tensor& labels, const py::object& val_images,
             const py::object& val_labels) {
            data::ImageDataset validation;
            if (!val_images.is_none())
              validation = to_dataset(val_images.cast<torch::Tensor>(), val_labels.cast<torch::Tensor>());
            py::gil_scoped_release release;
            t.fit(to_dataset(images, labels), validation);
          },
          py::arg("images"), py::arg("labels"), py::arg("validation_images") = py::none(),
          py::arg("validation_labels") = py::none())
      .def_property_readonly("history",
                             [](const Trainer& t) {
                               py::list out;
                               for (const auto& r : t.history()) out.append(to_dict(r));
                               return out;
                             })
      .def("save_checkpoint", &Trainer::save_checkpoint, py::arg("path"))
      .def("load_checkpoint", &Trainer::load_checkpoint, py::arg("path"))
      .def_property_readonly("checkpoint_path", &Trainer::checkpoint_path)
      .def("resume", &Trainer::resume)
      .def("results_json", &Trainer::results_json, py::arg("evaluations"), py::arg("dataset"));
}

}  // namespace python
}  // namespace dydnn
