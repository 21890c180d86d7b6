// pybind11 module cv2_learned._patches: strict bindings of cv2l::sample_patches and
// cv2l::orientation_histograms. Nothing is converted: arrays must already be C-contiguous, aligned, native
// float32 (cv2_learned.patches / cv2_learned.orientation are the lenient public wrappers).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "parallel.hpp"
#include "patch_sampling.hpp"

namespace py = pybind11;

namespace {

using f32 = py::array_t<float, py::array::c_style>;

// Work below this many samples per thread stays on the calling thread (thread start-up costs about 20-50 us).
constexpr std::int64_t kMinSamplesPerThread = 1 << 16;

py::array checked(const py::object& obj, const char* name, py::ssize_t ndim) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                             std::string(py::str(py::type::of(obj).attr("__name__"))));
    }
    if (!py::isinstance<py::array_t<float>>(obj)) {
        throw py::type_error(std::string(name) + " must have dtype float32 (native byte order), got " +
                             std::string(py::str(obj.attr("dtype"))));
    }
    auto arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.ndim() != ndim) {
        throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got ndim=" +
                              std::to_string(arr.ndim()));
    }
    const int flags = arr.flags();
    if (!(flags & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    if (!(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) {
        throw py::value_error(std::string(name) + " must be aligned");
    }
    return arr;
}

py::array sample_py(const py::object& images_obj, const py::object& frames_obj, std::int64_t patch_size,
                    const py::object& index_obj, const py::object& out_obj, const py::object& eps_obj) {
    // One image (ndarray) or a sequence of images (a pyramid); `index` picks each keypoint's image.
    std::vector<py::array> images;
    if (py::isinstance<py::array>(images_obj)) {
        images.push_back(checked(images_obj, "image", 2));
    } else if (py::isinstance<py::sequence>(images_obj) && !py::isinstance<py::str>(images_obj)) {
        for (const auto& item : py::reinterpret_borrow<py::sequence>(images_obj)) {
            images.push_back(checked(py::reinterpret_borrow<py::object>(item), "image", 2));
        }
    } else {
        throw py::type_error("images must be a numpy.ndarray or a sequence of them");
    }
    if (images.empty()) throw py::value_error("images must not be empty");
    const auto frames = checked(frames_obj, "frames", 2);
    if (frames.shape(1) != 4) throw py::value_error("frames must have shape (N, 4): cx, cy, c, s");
    if (patch_size < 1 || patch_size > 1024) throw py::value_error("patch_size must be in 1..1024");
    const std::int64_t n = frames.shape(0);
    std::vector<cv2l::ImageView> views;
    for (const auto& im : images) {
        if (n > 0 && (im.shape(0) < 1 || im.shape(1) < 1)) throw py::value_error("image must not be empty");
        views.push_back({static_cast<const float*>(im.data()), im.shape(0), im.shape(1)});
    }
    const std::int32_t* index = nullptr;
    py::array_t<std::int32_t> index_arr;
    if (!index_obj.is_none()) {
        if (!py::isinstance<py::array_t<std::int32_t>>(index_obj)) throw py::type_error("index must be an int32 array");
        index_arr = py::reinterpret_borrow<py::array_t<std::int32_t>>(index_obj);
        if (index_arr.ndim() != 1 || index_arr.shape(0) != n) throw py::value_error("index must have shape (N,)");
        if (!(index_arr.flags() & py::array::c_style)) throw py::value_error("index must be C-contiguous");
        index = index_arr.data();
        for (std::int64_t i = 0; i < n; ++i) {
            if (index[i] < 0 || index[i] >= static_cast<std::int64_t>(views.size())) {
                throw py::value_error("index " + std::to_string(index[i]) + " out of range for " +
                                      std::to_string(views.size()) + " images");
            }
        }
    } else if (views.size() != 1) {
        throw py::value_error("index is required with several images");
    }
    // `out`: a caller's (N, P, P) buffer to fill (reused between calls, so no fresh pages to fault in), else a new one
    py::array out;
    if (out_obj.is_none()) {
        out = f32({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(patch_size),
                   static_cast<py::ssize_t>(patch_size)});
    } else {
        out = checked(out_obj, "out", 3);
        if (out.shape(0) != n || out.shape(1) != patch_size || out.shape(2) != patch_size) {
            throw py::value_error("out must have shape (N, patch_size, patch_size) = (" + std::to_string(n) + ", " +
                                  std::to_string(patch_size) + ", " + std::to_string(patch_size) + ")");
        }
        if (!out.writeable()) throw py::value_error("out must be writeable");
    }
    float eps = -1.0f;   // none: no standardisation
    if (!eps_obj.is_none()) {
        const double e = eps_obj.cast<double>();
        if (!std::isfinite(e) || e <= 0.0) {
            throw py::value_error("standardise_eps must be a finite number > 0, got " + std::string(py::str(eps_obj)));
        }
        eps = static_cast<float>(e);
    }
    const float* fr = static_cast<const float*>(frames.data());
    float* dst = static_cast<float*>(out.mutable_data());
    {
        py::gil_scoped_release release;
        const std::int64_t pp = patch_size * patch_size;
        cv2l::parallel_ranges(n, kMinSamplesPerThread / pp + 1, [&](std::int64_t a, std::int64_t b) {
            cv2l::sample_patches(views.data(), static_cast<std::int64_t>(views.size()), index ? index + a : nullptr,
                                 fr + 4 * a, b - a, patch_size, dst + a * pp, eps);
        });
    }
    return out;
}

py::array_t<double> histograms_py(const py::object& patches_obj, const py::object& weights_obj, std::int64_t bins) {
    const auto patches = checked(patches_obj, "patches", 3);
    const auto weights = checked(weights_obj, "weights", 2);
    const std::int64_t n = patches.shape(0), p = patches.shape(1);
    if (patches.shape(2) != p) throw py::value_error("patches must be square (N, P, P)");
    if (p < 3) throw py::value_error("patches must be at least 3 x 3");
    if (weights.shape(0) != p || weights.shape(1) != p) throw py::value_error("weights must have shape (P, P)");
    if (bins < 1 || bins > 3600) throw py::value_error("bins must be in 1..3600");
    py::array_t<double> hist({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(bins)});
    const float* src = static_cast<const float*>(patches.data());
    const float* wts = static_cast<const float*>(weights.data());
    double* dst = hist.mutable_data();
    {
        py::gil_scoped_release release;
        cv2l::parallel_ranges(n, kMinSamplesPerThread / (p * p) + 1, [&](std::int64_t a, std::int64_t b) {
            cv2l::orientation_histograms(src + a * p * p, b - a, p, wts, bins, dst + a * bins);
        });
    }
    return hist;
}

}  // namespace

PYBIND11_MODULE(_patches, m) {
    m.doc() = "Compiled patch sampling and orientation histograms for cv2_learned (see cv2_learned.patches).";
    m.def("sample_patches", &sample_py, py::arg("images"), py::arg("frames"), py::arg("patch_size"),
          py::arg("index") = py::none(), py::arg("out") = py::none(), py::arg("standardise_eps") = py::none(),
          R"doc(sample_patches(images, frames, patch_size, index=None, out=None, standardise_eps=None) -> numpy.ndarray

Bilinear patches with BORDER_REFLECT_101, as cv2.remap(INTER_LINEAR).

images : a float32 (H, W) image, or a sequence of them (e.g. a pyramid); all C-contiguous.
frames : float32 (N, 4) rows (cx, cy, c, s) in the pixels of the keypoint's image: sample (r, q) lies at
    x = (c u - s v) + cx, y = (s u + c v) + cy with u = q - (P-1)/2, v = r - (P-1)/2.
index : int32 (N,) image of each keypoint (required with several images).
out : optional float32 (N, P, P) C-contiguous array to write the patches into (returned).
standardise_eps : None, or a finite eps > 0: each patch becomes (p - mean) / (std + eps) (mean and population
    std over its samples, in double), as the networks' first step.
Returns float32 (N, P, P). Non-finite coordinates give 0. The GIL is released.
)doc");
    m.def("get_thread_limit", [] { return cv2l::thread_limit(); },
          "get_thread_limit() -> int: this thread's limit set by set_thread_limit (0: none).");
    m.def("set_thread_limit", &cv2l::set_thread_limit, py::arg("n"),
          "set_thread_limit(n): this thread's later calls of this module start at most n threads (n >= 1; 0: no "
          "limit, the default: CV2L_THREADS or the hardware threads). For threads that are one of several workers.");
    m.def("orientation_histograms", &histograms_py, py::arg("patches"), py::arg("weights"), py::arg("bins"),
          R"doc(orientation_histograms(patches, weights, bins) -> numpy.ndarray

float32 (N, P, P) upright patches and float32 (P, P) weights -> float64 (N, bins) gradient-orientation
histograms (central differences, cv2.cartToPolar's angle, nearest bin, magnitude * weight). The GIL is released.
)doc");
}
