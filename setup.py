"""Build script: compiles the C++ extensions cv2_learned._nms and cv2_learned._patches; all metadata lives in pyproject.toml."""
import re
import sys
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

ROOT = Path(__file__).resolve().parent


def read_version(default: str = "0.1.0") -> str:
    """`__version__ = "..."` from cv2_learned/__init__.py (or _version.py), without importing the package."""
    for name in ("__init__.py", "_version.py"):
        path = ROOT / "cv2_learned" / name
        if path.is_file():
            m = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", path.read_text(encoding="utf-8"), re.M)
            if m:
                return m.group(1)
    return default


if sys.platform == "win32":
    extra_compile_args = ["/O2"]
else:
    # -ffp-contract=off: no fused multiply-add, so the refinement arithmetic matches numpy's bit for bit.
    extra_compile_args = ["-O3", "-ffp-contract=off"]
# The histogram loop vectorises only when sqrt need not set errno and selects may be evaluated eagerly; neither
# flag changes any IEEE result.
patch_compile_args = [] if sys.platform == "win32" else ["-fno-math-errno", "-fno-trapping-math"]

ext_modules = [
    Pybind11Extension(
        "cv2_learned._nms",
        sources=["cpp/bindings.cpp", "cpp/scale_space_nms.cpp", "cpp/maxima_refine.cpp"],
        include_dirs=["cpp"],
        depends=["cpp/scale_space_nms.hpp", "cpp/maxima_refine.hpp", "cpp/parallel.hpp", "cpp/simd_clones.hpp"],  # rebuild on header changes; also ships the header in the sdist
        cxx_std=17,
        extra_compile_args=extra_compile_args,
    ),
    Pybind11Extension(
        "cv2_learned._patches",
        sources=["cpp/patch_bindings.cpp", "cpp/patch_sampling.cpp"],
        include_dirs=["cpp"],
        depends=["cpp/patch_sampling.hpp", "cpp/parallel.hpp", "cpp/simd_clones.hpp"],
        cxx_std=17,
        extra_compile_args=extra_compile_args + patch_compile_args,
    ),
]

setup(version=read_version(), ext_modules=ext_modules)
