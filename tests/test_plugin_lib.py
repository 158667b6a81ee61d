"""CI checks of the TensorRT plugin library built by scripts/dev/build_plugins_ci.sh.

The library must build against both TensorRT header versions in
../shared/third_party (10.16 and 11.1), export exactly the two entry points
that TensorRT's loaders look up, and not depend on libnvinfer. The C++ example
must compile against both header versions. With MHC_REQUIRE_PLUGIN_BUILDS=1
(set by .ci/run after building) a missing artifact fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from builds import REQUIRE_BUILDS_ENV, missing

from mhc_export.core import build_layout as layout

ROOT = Path(__file__).resolve().parents[1]
OUT = layout.build_root()
BUILDS = {"11.1": layout.plugin_build_dir(11), "10.16": layout.plugin_build_dir(10)}
LIBS = {"11.1": layout.plugin_library(11), "10.16": layout.plugin_library(10)}
EXAMPLES = {"11.1": OUT / "example-cpp-trt11", "10.16": OUT / "example-cpp-trt10"}
HEADERS = Path(os.environ.get("MHC_TRT_HEADERS", ROOT.parent / "shared" / "third_party"))


def _need(path: Path) -> Path:
    if not path.exists():
        missing(f"{path} not built (run scripts/dev/build_plugins_ci.sh)", REQUIRE_BUILDS_ENV)
    return path


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


@pytest.mark.parametrize("version", list(BUILDS))
def test_exports_only_the_loader_entry_points(version):
    lib = _need(LIBS[version])
    out = subprocess.run(
        [_tool("nm"), "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True
    ).stdout
    exported = sorted(ln.split()[-1] for ln in out.splitlines() if ln.strip())
    assert exported == ["getCreators", "setLoggerFinder"], exported
    # Both must be functions in the text section, callable through dlsym.
    for sym in ("getCreators", "setLoggerFinder"):
        assert re.search(rf"\sT {sym}$", out, re.M), out


@pytest.mark.parametrize("version", list(BUILDS))
def test_no_libnvinfer_dependency(version):
    lib = _need(LIBS[version])
    dyn = subprocess.run(
        [_tool("readelf"), "-d", str(lib)], capture_output=True, text=True, check=True
    ).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
    assert needed, dyn
    assert not [n for n in needed if "nvinfer" in n or "tensorrt" in n or "nvonnxparser" in n], (
        needed
    )
    # No undefined symbol may point into TensorRT either (the loader would fail
    # on a machine where TensorRT's libraries are loaded RTLD_LOCAL).
    undef = subprocess.run(
        [_tool("nm"), "-D", "--undefined-only", str(lib)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "nvinfer1"
        not in subprocess.run(
            [_tool("c++filt")], input=undef, capture_output=True, text=True
        ).stdout
    )


@pytest.mark.parametrize("version", list(BUILDS))
def test_built_against_the_named_headers_and_fields_check(version):
    """The harness (same build) reports the header version and passes the field checks."""
    build = BUILDS[version]
    harness = _need(build / "mhc_plugin_harness")
    lib = _need(LIBS[version])
    cache = (build / "CMakeCache.txt").read_text()
    assert f"tensorrt-{version}" in cache
    proc = subprocess.run(
        [str(harness), str(lib), "fields"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    major, minor = version.split(".")
    assert f"TensorRT headers {major}.{minor}." in proc.stdout
    assert "FAIL" not in proc.stdout
    assert proc.stdout.count("PASS ") > 100


@pytest.mark.parametrize(("harness_version", "lib_version"), [("10.16", "11.1"), ("11.1", "10.16")])
def test_library_refuses_the_logger_of_another_tensorrt_major(harness_version, lib_version):
    """TensorRT 10 and 11 lay out ILoggerFinder/ILogger differently. A harness built
    against one header set (it exports getInferLibMajorVersion, as libnvinfer does) loads
    the library built against the other: the library must not call the foreign logger,
    say so on stderr, and still log there."""
    harness = _need(BUILDS[harness_version] / layout.HARNESS)
    for lib_v, expect in ((lib_version, "silent"), (harness_version, "received")):
        lib = _need(LIBS[lib_v])
        proc = subprocess.run([str(harness), str(lib), "logger"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert f"LOGGER {expect}" in proc.stdout, proc.stdout
        if expect == "silent":
            lib_major, run_major = lib_v.split(".")[0], harness_version.split(".")[0]
            assert (f"built against TensorRT {lib_major} headers but the TensorRT loading it "
                    f"is TensorRT {run_major}") in proc.stderr
            assert f"libmhc_trt_plugins_trt{run_major}.so" in proc.stderr
            assert "iters" in proc.stderr  # the rejection still reaches the user
        else:
            assert "built against" not in proc.stderr


@pytest.mark.parametrize(("lib_version", "expect"), [("11.1", "received"), ("10.16", "silent")])
def test_library_recognises_tensorrt_rtx(lib_version, expect):
    """TensorRT-RTX reports its own major (1 for 1.7) from getInferLibMajorVersion and has
    TensorRT 11's logger interfaces: the _trt11 library must use its logger, the _trt10
    one must refuse it naming the library to load. The harness of the library's own
    headers plays TensorRT-RTX (MHC_HARNESS_TRT_MAJOR=1)."""
    harness = _need(BUILDS[lib_version] / layout.HARNESS)
    lib = _need(LIBS[lib_version])
    proc = subprocess.run([str(harness), str(lib), "logger"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "MHC_HARNESS_TRT_MAJOR": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"LOGGER {expect}" in proc.stdout, proc.stdout + proc.stderr
    if expect == "silent":
        assert "the TensorRT loading it is TensorRT-RTX 1" in proc.stderr
        assert "libmhc_trt_plugins_trt11.so" in proc.stderr
    else:
        assert "built against" not in proc.stderr


@pytest.mark.parametrize("version", list(BUILDS))
def test_a_plan_carrying_the_library_is_recognised(version):
    """TrtEngine decides from the plan's bytes whether the library is in it
    (--serialize-plugins): the markers it looks for are in the library, not elsewhere."""
    from mhc_export.engine.runtime import plan_embeds_plugin_library

    lib = _need(LIBS[version]).read_bytes()
    assert plan_embeds_plugin_library(b"plan header" + lib + b"plan tail")
    assert not plan_embeds_plugin_library(_need(BUILDS[version] / layout.HARNESS).read_bytes())


@pytest.mark.parametrize("version", list(EXAMPLES))
def test_cpp_example_compiled_against_headers(version):
    build = _need(EXAMPLES[version])
    objs = list(build.rglob("mhc_infer.cpp.o"))
    assert objs, f"no object file for examples/cpp/mhc_infer.cpp in {build}"
    src = ROOT / "examples" / "cpp" / "mhc_infer.cpp"
    assert objs[0].stat().st_mtime >= src.stat().st_mtime, (
        "example object older than its source: rebuild"
    )
    assert f"tensorrt-{version}" in (build / "CMakeCache.txt").read_text()


def test_missing_tensorrt_headers_fail_clearly(tmp_path):
    """Configuring with the plugins ON and no headers names the options to set."""
    cmake = _tool("cmake")
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        pytest.skip("nvcc not installed")
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/local/cuda/bin"
    env.pop("TENSORRT_ROOT", None)
    proc = subprocess.run(
        [
            cmake,
            "-S",
            str(ROOT / "native"),
            "-B",
            str(tmp_path / "b"),
            "-DCMAKE_CUDA_ARCHITECTURES=90",
            f"-DTENSORRT_ROOT={tmp_path / 'nowhere'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    if "-- TensorRT headers:" in out:
        pytest.skip(
            "a system-wide TensorRT install was found, so the not-found path cannot be exercised"
        )
    assert proc.returncode != 0, out[-3000:]
    for word in ("TENSORRT_ROOT", "TENSORRT_INCLUDE_DIR", "MHC_BUILD_TRT_PLUGINS"):
        assert word in out, out[-3000:]


def test_header_versions_present():
    """Both header trees that CI builds against are where the build script expects them."""
    for version in BUILDS:
        header = HEADERS / f"tensorrt-{version}" / "include" / "NvInferVersion.h"
        if not header.exists():
            pytest.skip(f"{header} missing (MHC_TRT_HEADERS points elsewhere?)")
        text = header.read_text()
        major, minor = version.split(".")
        assert re.search(rf"#define TRT_MAJOR_ENTERPRISE {major}\b", text)
        assert re.search(rf"#define TRT_MINOR_ENTERPRISE {minor}\b", text)
