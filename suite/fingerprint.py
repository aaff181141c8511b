"""The machine a time was measured on, as far as time depends on it.

Wall-clock times — and even a time *ratio* between two strategies timed in one process — move
when the CPU's vector units or the number of cores change: XLA and torch pick their kernels by
the instruction sets the CPU reports (AVX2, AVX-512, AMX), and a point pinned to one core of
two loses the other to its neighbour. A time is therefore only compared with a time taken on
the same fingerprint (asv keys its results by machine for the same reason):

* the CPU: vendor, model string, family / model / stepping (a KVM guest may report only
  ``AMD EPYC``; the numbers tell the generations apart);
* the instruction-set flags the frameworks dispatch on (``ISA_FLAGS``), as the kernel reports
  them in ``/proc/cpuinfo``;
* the physical cores this process may run on (its affinity mask, counted by (package, core)
  so that SMT siblings count once) — ``taskset -c 0`` is another machine;
* the versions of python and of each framework's packages (``Framework.packages``: torch;
  jax and jaxlib): another compiler is another machine too.

The fingerprint's ``slug`` names the file of the machine's time baseline
(``benchmarks/time/<slug>.json``): readable words and a hash of every field above.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from suite.frameworks import registry as framework_registry

#: the packages each framework adapter declares, in the registry's order
FRAMEWORK_PACKAGES = tuple(p for fw in framework_registry().values() for p in fw.packages)
PACKAGES = (*FRAMEWORK_PACKAGES, "numpy", "array-api-compat", "memray", "memory-profiler",
            "pandas", "seaborn", "matplotlib")


def package_versions() -> dict[str, str | None]:
    """The versions of python and of the packages a measurement depends on (None: absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


#: the instruction-set flags the frameworks' CPU kernels are chosen by (prefixes match families)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512", "amx")
#: the versions a time depends on
VERSION_KEYS = ("python", *FRAMEWORK_PACKAGES)
SYSFS_CPU = Path("/sys/devices/system/cpu")


def _cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (all processors of a VM agree)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def isa_flags(flags: str) -> list[str]:
    """The flags of ``ISA_FLAGS`` (and their family members: avx512f, avx512_vnni, amx_tile…)
    among a cpuinfo ``flags`` line, sorted."""
    return sorted(f for f in flags.split()
                  if any(f == p or f.startswith(p) and p in ("avx512", "amx") for p in ISA_FLAGS))


def physical_cores_available() -> int:
    """Physical cores in this process's affinity mask (SMT siblings count once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = SYSFS_CPU / f"cpu{cpu}" / "topology"
        try:
            cores.add((topology.joinpath("physical_package_id").read_text().strip(),
                       topology.joinpath("core_id").read_text().strip()))
        except OSError:  # no sysfs topology (a container may hide it): one core per CPU
            cores.add(("?", str(cpu)))
    return len(cores)


def machine_fingerprint(cpuinfo_text: str | None = None,
                        versions: dict[str, Any] | None = None,
                        cores: int | None = None) -> dict[str, Any]:
    """This machine's fingerprint (module doc); the arguments stand in for the machine in
    tests."""
    info = _cpuinfo(cpuinfo_text)
    versions = versions if versions is not None else package_versions()
    fingerprint = {
        "cpu_vendor": info.get("vendor_id") or platform.machine(),
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_family": info.get("cpu family"),
        "cpu_model_number": info.get("model"),
        "cpu_stepping": info.get("stepping"),
        "isa": isa_flags(info.get("flags", "")),
        "physical_cores": cores if cores is not None else physical_cores_available(),
        "versions": {k: versions.get(k) for k in VERSION_KEYS},
    }
    fingerprint["slug"] = slug(fingerprint)
    return fingerprint


def slug(fingerprint: dict[str, Any]) -> str:
    """``amd-epyc-2c-1a2b3c4d``: the CPU's name, its cores, and 8 hex digits of a hash of every
    field, so two machines that differ in any field never share a file."""
    body = {k: v for k, v in fingerprint.items() if k != "slug"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    name = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", " ", str(fingerprint["cpu_model"]).lower())
    words = re.findall(r"[a-z0-9]+", name)[:4] or ["cpu"]
    return f"{'-'.join(words)}-{fingerprint['physical_cores']}c-{digest}"


def describe(fingerprint: dict[str, Any] | None) -> str:
    """One line for a person: CPU, cores, the wide vector units, versions and the slug."""
    if not isinstance(fingerprint, dict):
        return "unknown (recorded before machine fingerprints)"
    isa = fingerprint.get("isa") or []
    wide = [f for f in isa if f in ("avx2", "avx512f", "amx_tile", "avx_vnni")] or isa[-2:]
    cpu = (f"{fingerprint.get('cpu_model')} (family {fingerprint.get('cpu_family')}, model "
           f"{fingerprint.get('cpu_model_number')})")
    versions = " ".join(f"{k} {v}" for k, v in (fingerprint.get("versions") or {}).items() if v)
    return (f"{cpu}, {'/'.join(wide) or 'no AVX'}, {fingerprint.get('physical_cores')} core(s); "
            f"{versions} [{fingerprint.get('slug')}]")
