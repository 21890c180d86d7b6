// pybind11 module cv2_learned._nms: a strict binding of cv2l::scale_space_nms.
//
// The binding never converts: the scores must already be a 3-D, C-contiguous, aligned, native float32
// numpy array (cv2_learned.nms.scale_space_nms is the lenient public wrapper that converts).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "maxima_refine.hpp"
#include "parallel.hpp"
#include "scale_space_nms.hpp"

namespace py = pybind11;

namespace {

// Whether the thread held the GIL while the last scale_space_nms call ran its C++ loop (test hook).
std::atomic<int> g_last_call_held_gil{-1};

py::array_t<float> nms_py(const py::object& scores_obj, double threshold, std::int64_t border,
                          std::int64_t top_k, bool refine) {
    if (!py::isinstance<py::array>(scores_obj)) {
        throw py::type_error("scores must be a numpy.ndarray, got " +
                             std::string(py::str(py::type::of(scores_obj).attr("__name__"))));
    }
    // isinstance<array_t<float>> checks the dtype is equivalent to native float32 (byte order included).
    if (!py::isinstance<py::array_t<float>>(scores_obj)) {
        throw py::type_error("scores must have dtype float32 (native byte order), got " +
                             std::string(py::str(scores_obj.attr("dtype"))));
    }
    const auto scores = py::reinterpret_borrow<py::array>(scores_obj);
    if (scores.ndim() != 3) {
        throw py::value_error("scores must be 3-D (levels, height, width), got ndim=" +
                              std::to_string(scores.ndim()));
    }
    const int flags = scores.flags();
    if (!(flags & py::array::c_style)) throw py::value_error("scores must be C-contiguous");
    if (!(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) throw py::value_error("scores must be aligned");
    if (!std::isfinite(threshold)) throw py::value_error("threshold must be finite");
    if (border < 0) throw py::value_error("border must be >= 0");
    if (top_k < 0) throw py::value_error("top_k must be >= 0 (0 keeps all)");

    const std::int64_t L = scores.shape(0), H = scores.shape(1), W = scores.shape(2);
    const float* data = static_cast<const float*>(scores.data());
    const float thr = cv2l::threshold_to_float(threshold);
    std::vector<cv2l::NmsPoint> points;
    {
        // The array object stays referenced by the caller (and by `scores`) while the GIL is released.
        py::gil_scoped_release release;
        g_last_call_held_gil.store(PyGILState_Check(), std::memory_order_relaxed);
        points = cv2l::scale_space_nms(data, L, H, W, thr, border, top_k, refine);
    }
    static_assert(sizeof(cv2l::NmsPoint) == 4 * sizeof(float), "NmsPoint must be 4 packed floats");
    // Hand the result buffer to numpy without copying: the array owns the vector through a capsule.
    auto holder = std::make_unique<std::vector<cv2l::NmsPoint>>(std::move(points));
    py::capsule owner(holder.get(), [](void* ptr) { delete static_cast<std::vector<cv2l::NmsPoint>*>(ptr); });
    auto* owned = holder.release();  // now owned by the capsule
    const auto n = static_cast<py::ssize_t>(owned->size());
    // An empty vector may have no buffer; give numpy a valid (unused) pointer in that case.
    static float empty_buffer[4] = {0.f, 0.f, 0.f, 0.f};
    float* data_out = owned->empty() ? empty_buffer : reinterpret_cast<float*>(owned->data());
    py::array_t<float> out({n, static_cast<py::ssize_t>(4)},
                           {static_cast<py::ssize_t>(4 * sizeof(float)), static_cast<py::ssize_t>(sizeof(float))},
                           data_out, owner);
    return out;
}

py::array strict_f32(const py::object& obj, const char* name, py::ssize_t ndim) {
    if (!py::isinstance<py::array_t<float>>(obj)) {
        throw py::type_error(std::string(name) + " must be a float32 numpy.ndarray");
    }
    auto arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.ndim() != ndim) throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D");
    if (!(arr.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    return arr;
}

py::array_t<float> refine_py(const py::object& scores_obj, const py::object& rows_obj, std::int64_t radius) {
    const auto scores = strict_f32(scores_obj, "scores", 3);
    const auto rows = strict_f32(rows_obj, "rows", 2);
    if (rows.shape(1) != 4) throw py::value_error("rows must have shape (N, 4): level, y, x, score");
    if (radius < 0 || radius > 64) throw py::value_error("radius must be in 0..64");
    py::array_t<float> out({rows.shape(0), static_cast<py::ssize_t>(4)});
    std::copy_n(static_cast<const float*>(rows.data()), rows.shape(0) * 4, out.mutable_data());
    const float* data = static_cast<const float*>(scores.data());
    float* dst = out.mutable_data();
    const std::int64_t n = rows.shape(0), L = scores.shape(0), H = scores.shape(1), W = scores.shape(2);
    if (n > 0 && (L < 1 || H < 1 || W < 1)) throw py::value_error("scores must not be empty");
    try {
        py::gil_scoped_release release;
        cv2l::refine_maxima(data, L, H, W, dst, n, radius);
    } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
    }
    return out;
}

py::array_t<float> lattice_py(const py::list& maps_obj, const py::object& rows_obj, std::int64_t radius,
                              std::int64_t stride) {
    const auto rows = strict_f32(rows_obj, "rows", 2);
    if (rows.shape(1) != 4) throw py::value_error("rows must have shape (N, 4): level, y, x, score");
    const std::int64_t n = rows.shape(0);
    if (radius < 0 || radius > 64 || stride < 1 || stride > 64) throw py::value_error("bad radius or stride");
    std::vector<py::array> keep;
    std::vector<cv2l::ShiftedMaps> maps;
    for (const auto& item : maps_obj) {
        const auto t = py::reinterpret_borrow<py::tuple>(item);
        if (t.size() != 3) throw py::value_error("maps must be (dy, dx, scores) tuples");
        auto arr = strict_f32(t[2], "scores", 3);
        if (arr.shape(0) < 1 || arr.shape(1) < 1 || arr.shape(2) < 1) throw py::value_error("scores must not be empty");
        maps.push_back({static_cast<const float*>(arr.data()), arr.shape(0), arr.shape(1), arr.shape(2),
                        t[0].cast<std::int64_t>(), t[1].cast<std::int64_t>()});
        keep.push_back(arr);
    }
    if (maps.empty()) throw py::value_error("maps must not be empty");
    py::array_t<float> out({n, static_cast<py::ssize_t>(2)});
    const float* r = static_cast<const float*>(rows.data());
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        cv2l::lattice_centroids(maps.data(), static_cast<std::int64_t>(maps.size()), r, n, radius, stride, dst);
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_nms, m) {
    m.doc() = "Compiled scale-space non-maximum suppression for cv2_learned (see cv2_learned.nms).";
    m.def("scale_space_nms", &nms_py, py::arg("scores"), py::arg("threshold"), py::arg("border") = 0,
          py::arg("top_k") = 0, py::arg("refine") = true,
          R"doc(scale_space_nms(scores, threshold, border=0, top_k=0, refine=True) -> numpy.ndarray

Scale-space non-maximum suppression over a stack of score maps.

Parameters
----------
scores : numpy.ndarray
    float32 (native byte order), shape (L, H, W), C-contiguous and aligned. Nothing is converted:
    anything else raises TypeError (not an ndarray / wrong dtype) or ValueError (ndim, layout).
threshold : float
    Finite. Rounded to float32; a point is kept only when its score is strictly greater.
border : int
    >= 0. Kept points satisfy border <= y < H - border and border <= x < W - border.
top_k : int
    >= 0. Keep the first top_k points of the sorted result; 0 keeps all.
refine : bool
    Add a per-axis parabolic sub-pixel offset in [-0.5, 0.5] to level, y and x.

Returns
-------
numpy.ndarray
    float32 (N, 4) rows (level, y, x, score), sorted by score descending then linear index (level, y, x)
    ascending. A point is kept when score > threshold, it is >= every neighbour of its clipped 3x3x3
    (level, y, x) neighbourhood and strictly > every neighbour with a smaller linear index. NaN is never
    kept and a NaN neighbour never suppresses. The GIL is released during the computation.
)doc");
    m.def("refine_maxima", &refine_py, py::arg("scores"), py::arg("rows"), py::arg("radius"),
          "refine_maxima(scores, rows, radius) -> float32 (N, 4): see cv2_learned.detector.refine_maxima (the "
          "numpy specification); scores float32 (L, H, W), rows float32 (N, 4) with integer coordinates.");
    m.def("lattice_centroids", &lattice_py, py::arg("maps"), py::arg("rows"), py::arg("radius"), py::arg("stride"),
          "lattice_centroids(maps, rows, radius, stride) -> float32 (N, 2): see "
          "cv2_learned.detector.fine_centroids (the numpy specification).");
    m.def("get_thread_limit", [] { return cv2l::thread_limit(); },
          "get_thread_limit() -> int: this thread's limit set by set_thread_limit (0: none).");
    m.def("set_thread_limit", &cv2l::set_thread_limit, py::arg("n"),
          "set_thread_limit(n): this thread's later calls of this module start at most n threads (n >= 1; 0: no "
          "limit, the default: CV2L_NMS_THREADS or the hardware threads). For threads that are one of several workers.");
    m.def("_last_call_held_gil", [] { return g_last_call_held_gil.load(std::memory_order_relaxed); },
          "Test hook: 1 if the GIL was held during the last scale_space_nms computation, 0 if released, "
          "-1 before the first call.");
}
