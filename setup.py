"""Build script: compiles every smg/_native/*.pyx into an extension module.

SMG_NO_EXTENSIONS=1 at build time skips the extensions (a pure-Python install);
SMG_DEBUG=1 adds Cython annotate/linetrace and the SMG_DEBUG define.
"""
import glob
import os
import sys

from setuptools import setup

CYTHON_REQUIREMENT = "Cython>=3.1,<4"


def _extensions():
    if os.environ.get("SMG_NO_EXTENSIONS"):
        print("*** smg: building Pure (SMG_NO_EXTENSIONS set) ***", file=sys.stderr)
        return []
    try:
        import Cython
        from Cython.Build import cythonize
    except ImportError as exc:  # pragma: no cover - build-system requires pins it
        raise RuntimeError(f"smg needs {CYTHON_REQUIREMENT} to build its extensions") from exc
    major, minor = (int(x) for x in Cython.__version__.split(".")[:2])
    if (major, minor) < (3, 1) or major >= 4:
        raise RuntimeError(f"smg needs {CYTHON_REQUIREMENT}, found Cython {Cython.__version__}")

    from setuptools import Extension

    debug = bool(os.environ.get("SMG_DEBUG"))
    macros = [("SMG_DEBUG", "1")] if debug else []
    if debug:
        macros.append(("CYTHON_TRACE", "1"))
    exts = []
    for pyx in sorted(glob.glob(os.path.join("smg", "_native", "*.pyx"))):
        name = "smg._native." + os.path.splitext(os.path.basename(pyx))[0]
        exts.append(
            Extension(
                name,
                [pyx],
                define_macros=macros,
                extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
            )
        )
    print("*** smg: building Accelerated (%d extensions) ***" % len(exts), file=sys.stderr)
    return cythonize(
        exts,
        compiler_directives={"language_level": "3", "linetrace": debug, "embedsignature": True},
        annotate=debug,
        quiet=True,
    )


setup(ext_modules=_extensions())
