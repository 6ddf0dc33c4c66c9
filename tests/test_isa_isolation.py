"""Each ISA's kernel source must keep its code to itself.

kernels_<isa>.cpp are compiled with their own -m flags. A function they share by vague linkage
(an inline function or template outside qrt::cpu::<isa>) is one copy in the module, compiled with
whichever source's flags the linker or LTO kept: on an AVX2-only CPU (AMD EPYC, Zen 3) the avx2
path called an AVX-512 copy of the scratch carving and died of SIGILL. These tests read the
object files of the build tree `pip install .` left in build/ (the machine may have every ISA,
so running the kernels would not show it).
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# GNU nm's letters for symbols one copy of which serves the whole module.
VAGUE = {"W", "V", "u"}
ALLOWED = {"DW.ref.__gxx_personality_v0"}  # the C++ runtime's unwinding hook: data, no code


def kernel_objects() -> list[Path]:
    objects = sorted(ROOT.glob("build/*/CMakeFiles/_C.dir/csrc/cpu/kernels_*.cpp.o"))
    if not objects:
        pytest.skip("no build tree with kernel objects under build/ (the extension was built elsewhere)")
    if not (shutil.which("nm") and shutil.which("readelf")):
        pytest.skip("binutils (nm, readelf) not installed")
    return objects


def isa_of(obj: Path) -> str:
    return re.fullmatch(r"kernels_(\w+)\.cpp\.o", obj.name).group(1)


def shared_symbols(obj: Path) -> list[str]:
    """Symbols of obj with vague linkage that do not involve its own ISA namespace (a template
    instantiated on a type of that namespace is its own copy)."""
    out = subprocess.run(["nm", "-C", "--defined-only", str(obj)], check=True, capture_output=True, text=True).stdout
    own = f"qrt::cpu::{isa_of(obj)}::"
    found = []
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1] in VAGUE and own not in parts[2] and parts[2] not in ALLOWED:
            found.append(parts[2])
    return found


def is_lto_object(obj: Path) -> bool:
    sections = subprocess.run(["readelf", "-S", "--wide", str(obj)], check=True, capture_output=True, text=True).stdout
    return ".gnu.lto_" in sections


def test_kernel_sources_share_no_code():
    offenders = {obj.name: syms for obj in kernel_objects() if (syms := shared_symbols(obj))}
    assert not offenders, ("kernel sources define shared (vague-linkage) symbols outside their ISA namespace; "
                           f"give them internal linkage (an unnamed namespace): {offenders}")


def test_kernels_are_not_link_time_optimized():
    """With LTO the link merges what several sources instantiate (standard-library templates
    too), whatever flags each compiled it with."""
    lto = [obj.name for obj in kernel_objects() if is_lto_object(obj)]
    assert not lto, f"kernel objects carry LTO bytecode (CMAKE_INTERPROCEDURAL_OPTIMIZATION must stay OFF): {lto}"
