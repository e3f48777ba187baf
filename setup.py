"""Builds dydnn._C with the project's CMake (Ninja, ccache) and packages it.

`pip install --no-build-isolation .` (or `-e .`) runs this; it reuses ./build, so
after `make` nothing is compiled twice.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = Path(os.environ.get("DYDNN_BUILD_DIR", ROOT / "build"))
        if not (build_dir / "build.ninja").exists():
            subprocess.check_call([
                "cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
                "-DCMAKE_BUILD_TYPE=Release", f"-DPython3_EXECUTABLE={sys.executable}",
            ])
        subprocess.check_call(["cmake", "--build", str(build_dir), "--target", "_C"])
        built = next((ROOT / "python" / "dydnn").glob("_C*.so"))
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        if built.resolve() != target.resolve():
            shutil.copy2(built, target)


setup(ext_modules=[Extension("dydnn._C", sources=[])], cmdclass={"build_ext": CMakeBuild})
