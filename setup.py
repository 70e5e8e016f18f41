"""Builds the optional Cython hot path (ext/*.pyx -> routercore._*).

A missing compiler must not break the install: the pure-Python twins take over. Set
LLM_ROUTER_REQUIRE_EXTENSIONS=1 to turn a failed build into an error (CI does), and
LLM_ROUTER_PURE_WHEEL=1 to declare no extension at all: the result is a py3-none-any wheel, the
fallback the release bundles carry for interpreters without a compiled wheel (docs/release.md).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE = os.environ.get("LLM_ROUTER_REQUIRE_EXTENSIONS") == "1"
PURE = os.environ.get("LLM_ROUTER_PURE_WHEEL") == "1"


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing unless extensions are required."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        if REQUIRE:
            raise exc
        sys.stderr.write(
            f"warning: C extension not built ({exc}); pure-Python twins will be used\n"
        )


def extensions() -> list[Extension]:
    if PURE:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE:
            raise
        sys.stderr.write("warning: Cython missing; pure-Python twins will be used\n")
        return []
    exts = [
        Extension("routercore._balancer", ["ext/balancer.pyx"]),
        Extension("routercore._prefix_index", ["ext/prefix_index.pyx"]),
        Extension("routercore._wire", ["ext/wire.pyx"]),
        Extension("routercore._response_parser", ["ext/response_parser.pyx"]),
    ]
    return cythonize(
        exts, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
