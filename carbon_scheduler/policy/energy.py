"""Energy and carbon model of a task: power from its requests, emissions from the
intensity integrated over its run time.

Power is the region's `EnergyModel` applied to the task's effective request, times
the region's PUE; see `EnergyModel` for the published coefficients. Intensity
integrals come in g/kWh * hours, so grams = kW * integral.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.model import Resources, Task


# A pod that requests nothing still runs: like kube-scheduler's scoring, count it
# as requesting 100m CPU and 200 MiB of memory.
NON_ZERO_MILLI_CPU = 100
NON_ZERO_MEMORY = 200 * 1024 * 1024


def non_zero(request: Resources) -> Resources:
    """`request` with kube-scheduler's defaults for an unset CPU or memory request."""
    if request.milli_cpu and request.memory:
        return request
    return Resources(
        milli_cpu=request.milli_cpu or NON_ZERO_MILLI_CPU,
        memory=request.memory or NON_ZERO_MEMORY,
        ephemeral_storage=request.ephemeral_storage,
        scalar=request.scalar,
    )


def facility_power_kw(request: Resources, region: RegionSpec) -> float:
    """Average power in kW that a task requesting `request` draws in `region`,
    data-centre overhead (PUE) included."""
    return region.energy.watts(non_zero(request)) * region.pue / 1000.0


def energy_kwh(power_kw: float, seconds: float) -> float:
    return power_kw * seconds / 3600.0


def emissions_g(power_kw: float, intensity_hours: float) -> float:
    """Grams CO2eq of drawing `power_kw` over a span whose intensity integral is
    `intensity_hours` (g/kWh * hours)."""
    return power_kw * intensity_hours


def power_matrix(tasks: Sequence[Task], regions: Sequence[RegionSpec]) -> np.ndarray:
    """`facility_power_kw` of every task in every region, shape (tasks, regions)."""
    requests = [non_zero(task.requirements.request) for task in tasks]
    vcpus = np.fromiter((request.vcpus for request in requests), dtype=float, count=len(tasks))
    memory_gb = np.fromiter((request.memory_gb for request in requests), dtype=float, count=len(tasks))
    columns = []
    for region in regions:
        energy = region.energy
        per_vcpu = energy.watts_per_vcpu_idle + energy.cpu_utilization * (
            energy.watts_per_vcpu_busy - energy.watts_per_vcpu_idle
        )
        columns.append((vcpus * per_vcpu + memory_gb * energy.watts_per_gb_memory) * region.pue / 1000.0)
    return np.column_stack(columns) if columns else np.zeros((len(tasks), 0))
