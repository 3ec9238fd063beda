"""Build the Cython kernels under cartridge/_core (numpy headers, -O3)."""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = sorted(
    os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join("cartridge", "_core", "*.pyx"))
)

extensions = [
    Extension(
        f"cartridge._core.{name}",
        [os.path.join("cartridge", "_core", f"{name}.pyx")],
        include_dirs=[numpy.get_include(), os.path.join("cartridge", "_core", "vendor")],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level="3",
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
