"""dydnn: dynamic DNNs on LibTorch.

One set of weights holds many sub-networks (configs); `dydnn.nn` has the dynamic
layers and `DynamicNet`, all `torch.nn.Module`s backed by the C++ library.
"""
import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C
from ._C import Config, Connectivity, Execution, GroupSpec, NetSpec, retain_freed_memory
from . import anytime, data, exits, io, nn, plots, runtime, train
from .io import Artifact, load, load_artifact, save
from .specs import spec_path, available_specs

__version__ = "0.1.0"

__all__ = [
    "Config",
    "Connectivity",
    "Execution",
    "GroupSpec",
    "NetSpec",
    "Artifact",
    "save",
    "load",
    "load_artifact",
    "data",
    "anytime",
    "exits",
    "io",
    "runtime",
    "nn",
    "train",
    "plots",
    "retain_freed_memory",
    "spec_path",
    "available_specs",
    "__version__",
]
