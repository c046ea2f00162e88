// The only C++ file that knows Python: numpy in/out, argument checks, GIL release.
// Policy (documented in egbas_fast/core.py): real numeric arrays of any dtype/layout are
// converted to C-contiguous float32 (bit words to uint64); other dtypes -> TypeError;
// wrong ndim/shape, NaN/inf, non-positive sizes -> ValueError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "egbas/egbas.hpp"

namespace py = pybind11;
using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using u64_array = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;

namespace {

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

py::array as_numeric(const py::object& obj, const char* name, const char* kinds) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::type_error(std::string(name) + " must be a numpy array (or array-like)");
  const char kind = a.dtype().kind();
  if (std::string(kinds).find(kind) == std::string::npos)
    throw py::type_error(std::string(name) + " must have a real numeric dtype, got " +
                         std::string(py::str(a.dtype())));
  return a;
}

// float32 C-contiguous view/copy of a real array with the given ndim.
f32_array as_f32(const py::object& obj, const char* name, int ndim, const char* expected) {
  py::array a = as_numeric(obj, name, "fiub");
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have shape " + expected + ", got " + shape_str(a));
  return f32_array::ensure(a);
}

u64_array as_u64(const py::object& obj, const char* name, int ndim, const char* expected) {
  py::array a = as_numeric(obj, name, "iu");
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have shape " + expected + ", got " + shape_str(a));
  return u64_array::ensure(a);
}

u64_array pack_signs(const py::object& values_obj, double threshold) {
  f32_array values = as_f32(values_obj, "values", 2, "(B, n)");
  if (std::isnan(threshold)) throw py::value_error("threshold must not be NaN");
  const int64_t B = values.shape(0), n = values.shape(1), W = egbas::words_for(n);
  u64_array out({B, W});
  bool ok;
  {
    py::gil_scoped_release nogil;
    ok = egbas::pack_signs(values.data(), B, n, static_cast<float>(threshold), out.mutable_data());
  }
  if (!ok) throw py::value_error("values contains NaN");
  return out;
}

py::array_t<int32_t> mismatch_count(const py::object& bits_obj, const py::object& ref_obj,
                                    const py::object& mask_obj) {
  u64_array bits = as_u64(bits_obj, "bits", 2, "(B, w)");
  u64_array ref = as_u64(ref_obj, "ref", 1, "(w,)");
  u64_array mask = as_u64(mask_obj, "mask", 1, "(w,)");
  const int64_t B = bits.shape(0), w = bits.shape(1);
  if (ref.shape(0) != w)
    throw py::value_error("ref must have shape (w,) = (" + std::to_string(w) + ",) to match bits, got " +
                          shape_str(ref));
  if (mask.shape(0) != w)
    throw py::value_error("mask must have shape (w,) = (" + std::to_string(w) + ",) to match bits, got " +
                          shape_str(mask));
  py::array_t<int32_t> out(B);
  {
    py::gil_scoped_release nogil;
    egbas::mismatch_count(bits.data(), B, w, ref.data(), mask.data(), out.mutable_data());
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "egbas-fast C++ core (see egbas_fast.core for the documented API)";
  m.def("pack_signs", &pack_signs, py::arg("values"), py::arg("threshold") = 0.0);
  m.def("mismatch_count", &mismatch_count, py::arg("bits"), py::arg("ref"), py::arg("mask"));
  m.def("set_num_threads", &egbas::set_num_threads, py::arg("k"));
  m.def("get_num_threads", &egbas::get_num_threads);
  m.def("simd_isa", [] { return std::string(egbas::isa_name(egbas::active_isa())); });
  m.def("_limit_isa", [](const std::string& name) {
    if (name == "scalar") egbas::limit_isa(egbas::Isa::scalar);
    else if (name == "avx2") egbas::limit_isa(egbas::Isa::avx2);
    else if (name == "avx512") egbas::limit_isa(egbas::Isa::avx512);
    else throw py::value_error("isa must be 'scalar', 'avx2' or 'avx512', got " + name);
    return std::string(egbas::isa_name(egbas::active_isa()));
  }, py::arg("isa"));
}
