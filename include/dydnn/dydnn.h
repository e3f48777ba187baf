#pragma once
/// \file
/// Umbrella header: everything public in dydnn.

#include <dydnn/data/dataset.h>
#include <dydnn/data/idx.h>
#include <dydnn/errors.h>
#include <dydnn/io/artifact.h>
#include <dydnn/nn/config.h>
#include <dydnn/nn/connectivity.h>
#include <dydnn/nn/dynamic_batch_norm2d.h>
#include <dydnn/nn/dynamic_conv2d.h>
#include <dydnn/nn/dynamic_linear.h>
#include <dydnn/nn/dynamic_net.h>
#include <dydnn/nn/exits.h>
#include <dydnn/nn/execution.h>
#include <dydnn/nn/group_spec.h>
#include <dydnn/nn/kernels.h>
#include <dydnn/nn/spec.h>
#include <dydnn/nn/static_layer.h>
#include <dydnn/runtime/allocator.h>
#include <dydnn/runtime/latency.h>
#include <dydnn/train/exits.h>
#include <dydnn/train/stages.h>
#include <dydnn/train/trainer.h>
#include <dydnn/version.h>
