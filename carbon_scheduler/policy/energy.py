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


def facility_power_kw(request: Resources, region: RegionSpec) -> float:
    """Average power in kW that a task requesting `request` draws in `region`,
    data-centre overhead (PUE) included."""
    return region.energy.watts(request) * region.pue / 1000.0


def energy_kwh(power_kw: float, seconds: float) -> float:
    return power_kw * seconds / 3600.0


def emissions_g(power_kw: float, intensity_hours: float) -> float:
    """Grams CO2eq of drawing `power_kw` over a span whose intensity integral is
    `intensity_hours` (g/kWh * hours)."""
    return power_kw * intensity_hours


def power_matrix(tasks: Sequence[Task], regions: Sequence[RegionSpec]) -> np.ndarray:
    """`facility_power_kw` of every task in every region, shape (tasks, regions)."""
    vcpus = np.fromiter((task.requirements.request.vcpus for task in tasks), dtype=float, count=len(tasks))
    memory_gb = np.fromiter((task.requirements.request.memory_gb for task in tasks), dtype=float, count=len(tasks))
    columns = []
    for region in regions:
        energy = region.energy
        per_vcpu = energy.watts_per_vcpu_idle + energy.cpu_utilization * (
            energy.watts_per_vcpu_busy - energy.watts_per_vcpu_idle
        )
        columns.append((vcpus * per_vcpu + memory_gb * energy.watts_per_gb_memory) * region.pue / 1000.0)
    return np.column_stack(columns) if columns else np.zeros((len(tasks), 0))
