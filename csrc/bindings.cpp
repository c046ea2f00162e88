// The only C++ file that knows Python: numpy in/out, argument checks, GIL release.
// Policy (documented in egbas_fast/core.py): real numeric arrays of any dtype/layout are
// converted to C-contiguous float32 (bit words to uint64); other dtypes -> TypeError;
// wrong ndim/shape, NaN/inf, non-positive sizes -> ValueError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "egbas/egbas.hpp"
#ifdef EGBAS_HAVE_CUDA
#include "cuda/egbas_cuda.hpp"
#endif

namespace py = pybind11;
using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using u64_array = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;
using f64_array = py::array_t<double, py::array::c_style | py::array::forcecast>;

namespace {

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// kinds: numpy dtype kinds accepted ("fiub": real numbers and bools, "iu": integers).
// An empty array of any numeric dtype is accepted (np.asarray([]) is float64).
py::array as_numeric(const py::object& obj, const char* name, const char* kinds) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::type_error(std::string(name) + " must be a numpy array (or array-like)");
  const char kind = a.dtype().kind();
  const bool accepted = std::string(kinds).find(kind) != std::string::npos;
  const bool empty_numeric = a.size() == 0 && std::string("fiub").find(kind) != std::string::npos;
  if (!accepted && !empty_numeric)
    throw py::type_error(std::string(name) +
                         (std::string(kinds) == "iu" ? " must have an integer dtype" : " must have a real numeric dtype") +
                         ", got " + std::string(py::str(a.dtype())));
  return a;
}

// float32 C-contiguous view/copy of a real array with the given ndim.
f32_array as_f32(const py::object& obj, const char* name, int ndim, const char* expected) {
  py::array a = as_numeric(obj, name, "fiub");
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have shape " + expected + ", got " + shape_str(a));
  return f32_array::ensure(a);
}

void check_finite(const f32_array& a, const char* name) {
  for (py::ssize_t i = 0, n = a.size(); i < n; ++i)
    if (!std::isfinite(a.data()[i])) throw py::value_error(std::string(name) + " must be finite");
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

void check_dim(const f32_array& a, const char* name, int64_t d, const char* expected) {
  if (a.shape(1) != d)
    throw py::value_error(std::string(name) + " must have shape " + expected + " with d = " + std::to_string(d) +
                          ", got " + shape_str(a));
}

std::pair<py::array_t<int64_t>, py::array_t<float>> nearest(const py::object& points_obj,
                                                            const py::object& queries_obj) {
  f32_array points = as_f32(points_obj, "points", 2, "(N, d)");
  f32_array queries = as_f32(queries_obj, "queries", 2, "(B, d)");
  const int64_t N = points.shape(0), d = points.shape(1), B = queries.shape(0);
  if (N == 0) throw py::value_error("points must have at least one row, got shape " + shape_str(points));
  if (d == 0) throw py::value_error("points must have at least one column, got shape " + shape_str(points));
  check_dim(queries, "queries", d, "(B, d)");
  py::array_t<int64_t> idx(B);
  py::array_t<float> dist2(B);
  {
    py::gil_scoped_release nogil;
    egbas::nearest(points.data(), N, d, queries.data(), B, idx.mutable_data(), dist2.mutable_data());
  }
  return {idx, dist2};
}

// Tree plus a reader/writer lock: Python threads may share one tree with the GIL released.
struct PyTree {
  egbas::Tree tree;
  mutable std::shared_mutex mutex;
  PyTree(int64_t dim, int64_t capacity) : tree(dim, capacity) {}

  py::array_t<int64_t> add(const py::object& points_obj, const py::object& parents_obj) {
    const int64_t d = tree.dim();
    f32_array points = as_f32(points_obj, "points", 2, "(k, dim)");
    check_dim(points, "points", d, "(k, dim)");
    py::array parents_any = as_numeric(parents_obj, "parents", "iu");
    auto parents = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(parents_any);
    if (parents.ndim() != 1 || parents.shape(0) != points.shape(0))
      throw py::value_error("parents must have shape (k,) = (" + std::to_string(points.shape(0)) +
                            ",) to match points, got " + shape_str(parents));
    const int64_t k = points.shape(0);
    py::array_t<int64_t> idx(k);
    {
      py::gil_scoped_release nogil;
      std::unique_lock<std::shared_mutex> lock(mutex);
      tree.add(points.data(), parents.data(), k, idx.mutable_data());
    }
    return idx;
  }

  std::pair<py::array_t<int64_t>, py::array_t<float>> nearest(const py::object& queries_obj) const {
    f32_array queries = as_f32(queries_obj, "queries", 2, "(B, dim)");
    check_dim(queries, "queries", tree.dim(), "(B, dim)");
    const int64_t B = queries.shape(0);
    py::array_t<int64_t> idx(B);
    py::array_t<float> dist2(B);
    {
      py::gil_scoped_release nogil;
      std::shared_lock<std::shared_mutex> lock(mutex);
      tree.nearest(queries.data(), B, idx.mutable_data(), dist2.mutable_data());
    }
    return {idx, dist2};
  }

  // Read-only zero-copy views; the capsule keeps the buffer alive even after the tree regrows.
  template <class T>
  static py::array view(std::shared_ptr<const std::vector<T>> buf, std::vector<py::ssize_t> shape) {
    auto* owner = new std::shared_ptr<const std::vector<T>>(std::move(buf));
    py::capsule base(owner, [](void* p) { delete static_cast<std::shared_ptr<const std::vector<T>>*>(p); });
    py::array_t<T> a(shape, (*owner)->data(), base);
    py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return a;
  }
  py::array points() const {
    std::shared_lock<std::shared_mutex> lock(mutex);
    return view(tree.points_buffer(), {tree.size(), tree.dim()});
  }
  py::array parents() const {
    std::shared_lock<std::shared_mutex> lock(mutex);
    return view(tree.parents_buffer(), {tree.size()});
  }
};

py::array_t<float> steer(const py::object& origins_obj, const py::object& targets_obj, double step) {
  f32_array origins = as_f32(origins_obj, "origins", 2, "(B, d)");
  f32_array targets = as_f32(targets_obj, "targets", 2, "(B, d)");
  if (targets.shape(0) != origins.shape(0) || targets.shape(1) != origins.shape(1))
    throw py::value_error("targets must have the shape of origins " + shape_str(origins) + ", got " +
                          shape_str(targets));
  if (!(step > 0) || !std::isfinite(step)) throw py::value_error("step must be positive and finite, got " + std::to_string(step));
  const int64_t B = origins.shape(0), d = origins.shape(1);
  check_finite(origins, "origins");
  check_finite(targets, "targets");
  py::array_t<float> out({B, d});
  {
    py::gil_scoped_release nogil;
    egbas::steer(origins.data(), targets.data(), B, d, step, out.mutable_data());
  }
  return out;
}

// Checks shared by the random generators; returns the centre as float32 (d,).
f32_array rng_centre(const py::object& centre_obj, double size, const char* size_name, int64_t n) {
  f32_array centre = as_f32(centre_obj, "center", 1, "(d,)");
  if (centre.shape(0) == 0) throw py::value_error("center must have at least one element");
  check_finite(centre, "center");
  if (!(size > 0) || !std::isfinite(size))
    throw py::value_error(std::string(size_name) + " must be positive and finite, got " + std::to_string(size));
  if (n < 0) throw py::value_error("n must be >= 0, got " + std::to_string(n));
  return centre;
}

template <class Fill>
py::array_t<float> draw(int64_t n, int64_t d, Fill fill) {
  py::array_t<float> out({n, d});
  float* data = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    fill(data);
  }
  return out;
}

// float64 C-contiguous copy/view of a finite real array with the given shape (-1: any length).
f64_array as_f64(const py::object& obj, const char* name, std::vector<int64_t> shape, const char* expected) {
  py::array a = as_numeric(obj, name, "fiub");
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok) throw py::value_error(std::string(name) + " must have shape " + expected + ", got " + shape_str(a));
  f64_array out = f64_array::ensure(a);
  for (py::ssize_t i = 0, n = out.size(); i < n; ++i)
    if (!std::isfinite(out.data()[i])) throw py::value_error(std::string(name) + " must be finite");
  return out;
}

// PiecewiseHMC plus each chain's piece cache (chain r of every call continues from its own piece).
struct PyPiecewiseHMC {
  std::unique_ptr<egbas::PiecewiseHMC> hmc;
  std::vector<egbas::PiecewiseHMC::Piece> pieces;
  std::mutex mutex;

  PyPiecewiseHMC(const py::object& A_obj, const py::object& c_obj, double slope, const py::object& L_obj,
                 const py::object& e_obj, const py::object& w0_obj) {
    f64_array A = as_f64(A_obj, "A", {-1, -1}, "(m, d)");
    const int64_t m = A.shape(0), d = A.shape(1);
    if (m == 0 || d == 0) throw py::value_error("A must have at least one row and column, got " + shape_str(A));
    f64_array c = as_f64(c_obj, "c", {m}, "(m,) with m = A's rows");
    f64_array L = as_f64(L_obj, "L", {-1, m}, "(k, m) with m = A's rows");
    const int64_t k = L.shape(0);
    if (k == 0) throw py::value_error("L must have at least one row (a selected unit), got " + shape_str(L));
    f64_array e = as_f64(e_obj, "e", {k}, "(k,) with k = L's rows");
    f64_array w0 = as_f64(w0_obj, "w0", {m}, "(m,) with m = A's rows");
    if (!(slope >= 0) || !std::isfinite(slope))
      throw py::value_error("slope must be finite and >= 0, got " + std::to_string(slope));
    for (int64_t j = 0; j < m; ++j)
      if (w0.data()[j] != 1.0 && w0.data()[j] != slope)
        throw py::value_error("w0 must hold 1 or slope for every hidden unit");
    py::gil_scoped_release nogil;
    hmc = std::make_unique<egbas::PiecewiseHMC>(A.data(), c.data(), slope, L.data(), e.data(), w0.data(), m, d, k);
  }

  py::tuple run(const py::object& z_obj, const py::object& v_obj, double travel, int64_t max_bounces,
               int64_t record) {
    const int64_t d = hmc->d();
    f64_array z_in = as_f64(z_obj, "z", {-1, d}, "(C, d) with d = A's columns");
    const int64_t C = z_in.shape(0);
    f64_array v_in = as_f64(v_obj, "v", {C, d}, "(C, d) like z");
    if (!(travel > 0) || !std::isfinite(travel))
      throw py::value_error("travel must be positive and finite, got " + std::to_string(travel));
    if (max_bounces <= 0) throw py::value_error("max_bounces must be positive, got " + std::to_string(max_bounces));
    if (record < 0) throw py::value_error("record must be >= 0, got " + std::to_string(record));
    py::array_t<double> z({C, d}), path({C, record, d});
    std::vector<double> v(v_in.data(), v_in.data() + C * d);
    std::copy(z_in.data(), z_in.data() + C * d, z.mutable_data());
    py::array_t<int64_t> bounces(C);
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mutex);
      hmc->trajectories(pieces, z.mutable_data(), v.data(), C, travel, max_bounces, bounces.mutable_data(), record,
                        path.mutable_data());
    }
    return py::make_tuple(z, bounces, path);
  }
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "egbas-fast C++ core (see egbas_fast.core for the documented API)";
  m.def("pack_signs", &pack_signs, py::arg("values"), py::arg("threshold") = 0.0);
  m.def("mismatch_count", &mismatch_count, py::arg("bits"), py::arg("ref"), py::arg("mask"));
  m.def("nearest", &nearest, py::arg("points"), py::arg("queries"));
  py::class_<PyTree>(m, "Tree")
      .def(py::init<int64_t, int64_t>(), py::arg("dim"), py::arg("capacity") = 1024)
      .def("add", &PyTree::add, py::arg("points"), py::arg("parents"))
      .def("nearest", &PyTree::nearest, py::arg("queries"))
      .def_property_readonly("points", &PyTree::points)
      .def_property_readonly("parents", &PyTree::parents)
      .def_property_readonly("size", [](const PyTree& t) { std::shared_lock<std::shared_mutex> l(t.mutex); return t.tree.size(); })
      .def_property_readonly("dim", [](const PyTree& t) { return t.tree.dim(); })
      .def_property_readonly("capacity", [](const PyTree& t) { std::shared_lock<std::shared_mutex> l(t.mutex); return t.tree.capacity(); })
      .def("__len__", [](const PyTree& t) { std::shared_lock<std::shared_mutex> l(t.mutex); return t.tree.size(); })
      .def("__repr__", [](const PyTree& t) {
        std::shared_lock<std::shared_mutex> l(t.mutex);
        return "Tree(dim=" + std::to_string(t.tree.dim()) + ", size=" + std::to_string(t.tree.size()) +
               ", capacity=" + std::to_string(t.tree.capacity()) + ")";
      });
  py::class_<PyPiecewiseHMC>(m, "PiecewiseHMC")
      .def(py::init<const py::object&, const py::object&, double, const py::object&, const py::object&,
                    const py::object&>(),
           py::arg("A"), py::arg("c"), py::arg("slope"), py::arg("L"), py::arg("e"), py::arg("w0"))
      .def("run", &PyPiecewiseHMC::run, py::arg("z"), py::arg("v"), py::arg("travel"), py::arg("max_bounces"),
           py::arg("record") = 0)
      .def_property_readonly("shape", [](const PyPiecewiseHMC& p) {
        return py::make_tuple(p.hmc->m(), p.hmc->d(), p.hmc->k());
      })
      .def_property_readonly("nonzeros", [](const PyPiecewiseHMC& p) { return p.hmc->nonzeros(); });
  // Optional CUDA kernels: same contract as nearest / pack_signs, host arrays in and out.
  m.def("cuda_available", [] {
#ifdef EGBAS_HAVE_CUDA
    return egbas::cuda::available();
#else
    return false;
#endif
  });
  m.def("nearest_cuda", [](const py::object& points_obj, const py::object& queries_obj) {
#ifdef EGBAS_HAVE_CUDA
    f32_array points = as_f32(points_obj, "points", 2, "(N, d)");
    f32_array queries = as_f32(queries_obj, "queries", 2, "(B, d)");
    const int64_t N = points.shape(0), d = points.shape(1), B = queries.shape(0);
    if (N == 0 || d == 0) throw py::value_error("points must have at least one row and column, got " + shape_str(points));
    check_dim(queries, "queries", d, "(B, d)");
    check_finite(points, "points");
    check_finite(queries, "queries");
    py::array_t<int64_t> idx(B);
    py::array_t<float> dist2(B);
    {
      py::gil_scoped_release nogil;
      egbas::cuda::nearest(points.data(), N, d, queries.data(), B, idx.mutable_data(), dist2.mutable_data());
    }
    return std::make_pair(idx, dist2);
#else
    (void)points_obj, (void)queries_obj;
    throw std::runtime_error("egbas_fast was built without CUDA (rebuild with -Ccmake.define.EGBAS_CUDA=ON)");
    return std::make_pair(py::array_t<int64_t>(), py::array_t<float>());
#endif
  }, py::arg("points"), py::arg("queries"));
  m.def("pack_signs_cuda", [](const py::object& values_obj, double threshold) {
#ifdef EGBAS_HAVE_CUDA
    f32_array values = as_f32(values_obj, "values", 2, "(B, n)");
    if (std::isnan(threshold)) throw py::value_error("threshold must not be NaN");
    const int64_t B = values.shape(0), n = values.shape(1);
    u64_array out({B, egbas::words_for(n)});
    bool ok;
    {
      py::gil_scoped_release nogil;
      ok = egbas::cuda::pack_signs(values.data(), B, n, float(threshold), out.mutable_data());
    }
    if (!ok) throw py::value_error("values contains NaN");
    return out;
#else
    (void)values_obj, (void)threshold;
    throw std::runtime_error("egbas_fast was built without CUDA (rebuild with -Ccmake.define.EGBAS_CUDA=ON)");
    return u64_array();
#endif
  }, py::arg("values"), py::arg("threshold") = 0.0);
  m.def("steer", &steer, py::arg("origins"), py::arg("targets"), py::arg("step"));
  m.def("random_uniform_box", [](const py::object& c, double half_width, int64_t n, uint64_t seed, uint64_t offset) {
    f32_array centre = rng_centre(c, half_width, "half_width", n);
    return draw(n, centre.shape(0), [&](float* out) {
      egbas::random_uniform_box(centre.data(), centre.shape(0), half_width, n, seed, offset, out);
    });
  }, py::arg("center"), py::arg("half_width"), py::arg("n"), py::arg("seed"), py::arg("offset") = 0);
  m.def("random_uniform_ball", [](const py::object& c, double radius, int64_t n, uint64_t seed, uint64_t offset) {
    f32_array centre = rng_centre(c, radius, "radius", n);
    return draw(n, centre.shape(0), [&](float* out) {
      egbas::random_uniform_ball(centre.data(), centre.shape(0), radius, n, seed, offset, out);
    });
  }, py::arg("center"), py::arg("radius"), py::arg("n"), py::arg("seed"), py::arg("offset") = 0);
  m.def("random_normal", [](int64_t n, int64_t d, uint64_t seed, uint64_t offset) {
    if (n < 0) throw py::value_error("n must be >= 0, got " + std::to_string(n));
    if (d <= 0) throw py::value_error("d must be positive, got " + std::to_string(d));
    return draw(n, d, [&](float* out) { egbas::random_normal(n, d, seed, offset, out); });
  }, py::arg("n"), py::arg("d"), py::arg("seed"), py::arg("offset") = 0);
  m.def("_numpy_sq_dist", [](const py::object& p_obj, const py::object& q_obj) {  // test hook
    f32_array p = as_f32(p_obj, "p", 1, "(d,)"), q = as_f32(q_obj, "q", 1, "(d,)");
    if (p.shape(0) != q.shape(0)) throw py::value_error("p and q must have the same length");
    std::vector<double> buf(static_cast<size_t>(p.shape(0)));
    return egbas::detail::numpy_sq_dist(p.data(), q.data(), p.shape(0), buf.data());
  }, py::arg("p"), py::arg("q"));
  m.def("_philox4x32", [](uint64_t seed, uint64_t draw, uint32_t coord, uint32_t tag) {  // test hook
    // The raw Philox4x32-10 block behind every random draw: counter (draw lo, draw hi, coord, tag), key seed.
    const egbas::detail::Philox4x32 r(seed, draw, coord, tag);
    return py::make_tuple(r.v[0], r.v[1], r.v[2], r.v[3]);
  }, py::arg("seed"), py::arg("draw"), py::arg("coord"), py::arg("tag"));
  m.def("_pool_threads", [](int64_t chunks, int64_t micros) {  // test hook
    // How many distinct threads run `chunks` chunks that each sleep `micros`: the pool at work.
    std::mutex mutex;
    std::set<std::thread::id> seen;
    py::gil_scoped_release release;
    egbas::parallel_for(chunks, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) std::this_thread::sleep_for(std::chrono::microseconds(micros));
      std::lock_guard<std::mutex> lock(mutex);
      seen.insert(std::this_thread::get_id());
    });
    return seen.size();
  }, py::arg("chunks"), py::arg("micros"));
  m.def("set_num_threads", [](int k) {
    if (k < 0) throw py::value_error("k must be >= 1 (or 0 for the default), got " + std::to_string(k));
    egbas::set_num_threads(k);
  }, py::arg("k"));
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
