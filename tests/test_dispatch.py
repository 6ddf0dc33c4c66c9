"""The kernel path is chosen at import and can be forced by QUALAM_ISA."""
import os
import subprocess
import sys

import numpy as np
import pytest

import qualam_rt
from qualam_rt import _C
from qualam_rt import synthetic as syn


def run_with_isa(value):
    env = dict(os.environ, QUALAM_ISA=value)
    return subprocess.run([sys.executable, "-c", "import qualam_rt; print(qualam_rt.isa())"],
                          env=env, capture_output=True, text=True, cwd="/")


@pytest.mark.parametrize("name", qualam_rt.supported_isas())
def test_environment_variable_forces_a_path(name):
    out = run_with_isa(name)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_default_is_the_best_path_the_cpu_flags_allow():
    """Expected from /proc/cpuinfo, not from the module's own detection."""
    flags = cpu_flags()
    if {"amx_tile", "amx_int8", "avx512_vnni"} <= flags and qualam_rt._C.amx_status() == "available":
        want = "amx"
    elif {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "fma"} <= flags:
        want = "avx512vnni"
    elif {"avx2", "fma"} <= flags:
        want = "avx2"
    else:
        want = "ref"
    assert run_with_isa("").stdout.strip() == want
    assert qualam_rt.supported_isas()[:2] == ["ref", "amx_emulated"]  # on every x86-64


def test_amx_status_says_why_it_is_unavailable():
    status = qualam_rt._C.amx_status()
    if "amx_int8" not in cpu_flags():
        assert status == "unavailable: the CPU has no AMX-INT8"
        with pytest.raises(ValueError, match="no AMX-INT8"):
            qualam_rt.set_isa("amx")
        out = run_with_isa("amx")
        assert out.returncode != 0 and "not supported by this CPU: the CPU has no AMX-INT8" in out.stderr
    else:
        assert status == "available" or status.startswith("unavailable: the OS")
        assert ("amx" in qualam_rt.supported_isas()) == (status == "available")


def test_unknown_path_in_environment_fails_on_import_with_a_message():
    out = run_with_isa("sse9")
    assert out.returncode != 0
    assert "unknown ISA" in out.stderr


def test_a_container_cpu_quota_bounds_the_default_thread_count(tmp_path):
    """cgroup v2 cpu.max and v1 cfs quota / period, in whole CPUs; no quota, or one we cannot
    read, leaves OpenMP's count; OMP_NUM_THREADS always decides."""
    from qualam_rt import cpus

    def tree(name, files):
        root = tmp_path / name
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        return root

    assert cpus.cgroup_cpu_quota(tree("v2", {"cpu.max": "250000 100000\n"})) == 2
    assert cpus.cgroup_cpu_quota(tree("v2_small", {"cpu.max": "50000 100000"})) == 1
    assert cpus.cgroup_cpu_quota(tree("v2_none", {"cpu.max": "max 100000"})) is None
    assert cpus.cgroup_cpu_quota(tree("v1", {"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"})) == 4
    assert cpus.cgroup_cpu_quota(tree("v1_joint", {"cpu,cpuacct/cpu.cfs_quota_us": "300000",
                                                   "cpu,cpuacct/cpu.cfs_period_us": "100000"})) == 3
    assert cpus.cgroup_cpu_quota(tree("v1_none", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})) is None
    assert cpus.cgroup_cpu_quota(tree("garbled", {"cpu.max": "lots of cpus"})) is None
    assert cpus.cgroup_cpu_quota(tmp_path / "nothing") is None
    assert cpus.cgroup_cpu_quota(tree("v1_garbled", {"cpu/cpu.cfs_quota_us": "400000"})) is None
    assert cpus.default_thread_count(64, environ={}, quota=2) == 2
    assert cpus.default_thread_count(2, environ={}, quota=8) == 2
    assert cpus.default_thread_count(64, environ={"OMP_NUM_THREADS": "64"}, quota=2) == 64
    assert cpus.default_thread_count(64, environ={}, quota=None) == 64


def test_a_quota_on_the_process_cgroup_or_above_it_bounds_the_thread_count(tmp_path):
    """A systemd service's CPUQuota sits on the service's own cgroup, below the hierarchy's
    root: the process's cgroup (/proc/self/cgroup) and each one above it are read, and the
    tightest quota counts; quotas on other branches of the tree do not."""
    from qualam_rt import cpus

    def files(root, contents):
        for rel, text in contents.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        return root

    v2 = files(tmp_path / "v2", {"cpu.max": "max 100000", "system.slice/cpu.max": "800000 100000",
                                 "system.slice/qa.service/cpu.max": "300000 100000",
                                 "system.slice/other.service/cpu.max": "100000 100000"})
    proc = files(tmp_path / "proc", {"v2": "0::/system.slice/qa.service\n", "v2_slice": "0::/system.slice\n",
                                     "v1": "5:memory:/a\n3:cpu,cpuacct:/system.slice/qa.service\n2:cpuacct:/b\n",
                                     "escape": "0::/../../etc\n", "host_path": "0::/docker/abc\n"})
    assert cpus.cgroup_cpu_quota(v2, proc / "v2") == 3
    assert cpus.cgroup_cpu_quota(v2, proc / "v2_slice") == 8
    files(v2, {"system.slice/cpu.max": "200000 100000"})  # the slice is tighter than the service
    assert cpus.cgroup_cpu_quota(v2, proc / "v2") == 2
    # Paths that name no directory here (a host path seen from a container, "..") leave the root.
    assert cpus.cgroup_cpu_quota(files(tmp_path / "c", {"cpu.max": "400000 100000"}), proc / "host_path") == 4
    assert cpus.cgroup_cpu_quota(files(tmp_path / "d", {"cpu.max": "400000 100000"}), proc / "escape") == 4
    v1 = files(tmp_path / "v1", {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000",
                                 "cpu,cpuacct/system.slice/qa.service/cpu.cfs_quota_us": "150000",
                                 "cpu,cpuacct/system.slice/qa.service/cpu.cfs_period_us": "100000"})
    assert cpus.cgroup_cpu_quota(v1, proc / "v1") == 1
    assert cpus.cgroup_cpu_quota(v1, proc / "v2") is None  # a v2 path does not name the v1 cgroup


def test_thread_counts_past_the_limit_are_refused_not_crashed_on():
    """100,000 threads crashed the process at the next kernel (GNU OpenMP puts a record per
    thread on the caller's stack). Counts past max_threads() are refused wherever they are
    given; OMP_NUM_THREADS past it starts the process at the limit."""
    limit = _C.max_threads()
    assert limit >= max(256, os.cpu_count() or 1)
    before = _C.num_threads()
    for bad in (0, limit + 1, 100_000):
        with pytest.raises(ValueError, match=r"thread count must be in \[1, "):
            _C.set_num_threads(bad)
    assert _C.num_threads() == before
    cfg = dict(hidden=64, heads=4, intermediate=96, layers=1, vocab_size=20, max_position=16, type_vocab_size=2)
    encoder = _C.Encoder(cfg, syn.random_tensors(cfg))
    with pytest.raises(ValueError, match="threads must be in"):
        encoder.forward(np.ones(5, np.int32), np.zeros(5, np.int32), np.array([0, 5], np.int64), threads=limit + 1)
    code = ("import numpy as np, qualam_rt; from qualam_rt import _C; "
            "pw = _C.PackedWeight(np.ones((384, 384), np.int8), np.ones(384, np.float32)); "
            "_C.gemm(np.ones((512, 384), np.uint8), 1.0, 0, pw); print(qualam_rt.num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, OMP_NUM_THREADS="100000"),
                         capture_output=True, text=True, cwd="/", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) == limit
