// The only C++ file that knows Python. (skeleton; the core issue fills it in)
#include <pybind11/pybind11.h>
namespace py = pybind11;
PYBIND11_MODULE(_core, m) { m.doc() = "egbas-fast C++ core"; }
