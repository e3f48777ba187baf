// The extension module dydnn._C: it only binds; the library lives in C++.
#include "bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "dydnn's C++ core (bound with pybind11). Use the `dydnn` package, not this module.";
  dydnn::python::bind_types(m);
  dydnn::python::bind_modules(m);
  dydnn::python::bind_train(m);
  dydnn::python::bind_depth(m);
  dydnn::python::bind_io(m);
  dydnn::python::bind_runtime(m);
}
