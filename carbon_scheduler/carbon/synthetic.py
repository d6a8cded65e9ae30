"""Seeded synthetic carbon-intensity traces that behave like real grids.

Each region follows one model. For a step that starts at Unix time t:

    level(t) = mean + daily(t) + weekly(t) + annual(t)                 [g/kWh]
    value(t) = max(floor, level(t) * exp(w(t) - s**2 / 2))             [g/kWh]

- `daily` is a sum of harmonics of the UTC time of day. `weekly` adds one offset
  per UTC weekday. `annual` is a sum of harmonics of a 365.2425-day year whose
  phase is counted from the Unix epoch, so no calendar is involved.
- `w` is the weather: an Ornstein-Uhlenbeck process sampled at the step, that is
  an AR(1) series with coefficient exp(-step / tau). Its stationary standard
  deviation is `s` and its correlation time `tau` spans days. It multiplies the
  level rather than adding to it, because a windy grid swings by a similar
  fraction of its level at any level. With the GB trace's autocorrelation, an
  additive weather term gives a median daily (max - min) / mean of about 0.5
  where the recording has 0.62, while the multiplicative one gives about 0.6.
  The exp(-s**2 / 2) term keeps the factor's mean at 1, so `mean` stays the
  long-run mean.
- The result is clipped at `floor` and rounded to 0.01 g/kWh like recorded data.

`calibrate` estimates these parameters from a trace. `DEFAULT_PROFILES` contains what
it returns for the recorded 2022-2023 Electricity Maps data of GB (eu-west),
US-MIDA-PJM (us-east) and KR (asia-east). `make_demo_trace` produces the
repository's demo trace, traces/demo.csv.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

import numpy as np

from carbon_scheduler.carbon.traces import PathLike, Trace, write_trace

__all__ = [
    "DEFAULT_PROFILES",
    "DEMO_DAYS",
    "DEMO_SEED",
    "DEMO_START",
    "RegionProfile",
    "calibrate",
    "make_demo_trace",
    "synthesize",
]

DAY_SECONDS = 86_400
WEEK_DAYS = 7
YEAR_SECONDS = 365.2425 * DAY_SECONDS
HOUR_SECONDS = 3600

DEMO_START = 1_672_531_200  # 2023-01-01T00:00:00Z
DEMO_DAYS = 365
DEMO_SEED = 2026
DEMO_STEP_SECONDS = 3600

# Shortest spans over which calibrate() estimates each term. Shorter traces get
# zeros for it, because a weekly profile from one week or an annual cycle from a
# few months would only fit noise.
MIN_CALIBRATION_DAYS = 2
MIN_WEEKLY_DAYS = 14
MIN_ANNUAL_DAYS = 365


@dataclass(frozen=True)
class RegionProfile:
    """Parameters of one region's synthetic intensity; see the module docstring.

    `daily_harmonics_g_per_kwh[k - 1]` is the (cosine, sine) amplitude of the
    harmonic with k cycles per day, the angle being 2 pi k times the fraction of
    the UTC day. `weekly_offsets_g_per_kwh` has 7 offsets, Monday first (UTC
    weekdays), summing to zero. `annual_harmonics_g_per_kwh[k - 1]` is the (cosine,
    sine) amplitude with k cycles per 365.2425-day year, the angle being 2 pi k
    times the years since the Unix epoch. `weather_log_sd` is dimensionless: the
    standard deviation of the natural log of the weather factor.
    """

    mean_g_per_kwh: float
    daily_harmonics_g_per_kwh: tuple[tuple[float, float], ...]
    weekly_offsets_g_per_kwh: tuple[float, ...]
    annual_harmonics_g_per_kwh: tuple[tuple[float, float], ...]
    weather_log_sd: float
    weather_correlation_hours: float
    floor_g_per_kwh: float

    def __post_init__(self) -> None:
        if not self.mean_g_per_kwh > 0:
            raise ValueError(f"mean_g_per_kwh must be positive, got {self.mean_g_per_kwh}")
        if len(self.weekly_offsets_g_per_kwh) != WEEK_DAYS:
            raise ValueError(
                "weekly_offsets_g_per_kwh needs 7 values, Monday first, got "
                f"{len(self.weekly_offsets_g_per_kwh)}"
            )
        for name in ("daily_harmonics_g_per_kwh", "annual_harmonics_g_per_kwh"):
            for pair in getattr(self, name):
                if len(pair) != 2:
                    raise ValueError(f"{name} needs (cosine, sine) pairs, got {pair!r}")
        if not self.weather_log_sd >= 0:
            raise ValueError(f"weather_log_sd must be >= 0, got {self.weather_log_sd}")
        if not self.weather_correlation_hours > 0:
            raise ValueError(
                f"weather_correlation_hours must be positive, got {self.weather_correlation_hours}"
            )
        if not self.floor_g_per_kwh >= 0:
            raise ValueError(f"floor_g_per_kwh must be >= 0, got {self.floor_g_per_kwh}")

    def level(self, times: np.ndarray) -> np.ndarray:
        """Intensity without weather at Unix times `times` (seconds), in g/kWh."""
        times = np.asarray(times, dtype=np.int64)
        level = np.full(times.shape, self.mean_g_per_kwh)
        day_angle = 2 * np.pi * (times % DAY_SECONDS) / DAY_SECONDS
        for k, (cosine, sine) in enumerate(self.daily_harmonics_g_per_kwh, start=1):
            level += cosine * np.cos(k * day_angle) + sine * np.sin(k * day_angle)
        level += np.asarray(self.weekly_offsets_g_per_kwh)[_weekday(times)]
        year_angle = 2 * np.pi * times / YEAR_SECONDS
        for k, (cosine, sine) in enumerate(self.annual_harmonics_g_per_kwh, start=1):
            level += cosine * np.cos(k * year_angle) + sine * np.sin(k * year_angle)
        return level


def _weekday(times: np.ndarray) -> np.ndarray:
    """UTC weekday of Unix times, Monday 0. 1970-01-01 was a Thursday (3)."""
    return (times // DAY_SECONDS + 3) % WEEK_DAYS


def _design_matrix(times: np.ndarray, *, daily: int, weekly: bool, annual: int) -> np.ndarray:
    """Regressors of the periodic terms: daily cosine/sine pairs, six weekday
    columns in sum-to-zero coding (Sunday is minus the sum of the others), then
    annual cosine/sine pairs."""
    columns: list[np.ndarray] = []
    day_angle = 2 * np.pi * (times % DAY_SECONDS) / DAY_SECONDS
    for k in range(1, daily + 1):
        columns += [np.cos(k * day_angle), np.sin(k * day_angle)]
    if weekly:
        weekday = _weekday(times)
        sunday = (weekday == WEEK_DAYS - 1).astype(np.float64)
        for day in range(WEEK_DAYS - 1):
            columns.append((weekday == day).astype(np.float64) - sunday)
    year_angle = 2 * np.pi * times / YEAR_SECONDS
    for k in range(1, annual + 1):
        columns += [np.cos(k * year_angle), np.sin(k * year_angle)]
    if not columns:
        return np.zeros((times.size, 0))
    return np.column_stack(columns)


def _pairs(values: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(a), float(b)) for a, b in values.reshape(-1, 2))


def calibrate(
    trace: Trace,
    *,
    daily_harmonics: int = 4,
    annual_harmonics: int = 2,
    floor_quantile: float = 0.001,
) -> dict[str, RegionProfile]:
    """Estimate a `RegionProfile` for every region of `trace`.

    The mean is the sample mean. The daily, weekly and annual terms come from one
    least-squares fit of the deviations from it. The weather is the log of the
    ratio between each value and the fitted level: its standard deviation gives
    `weather_log_sd`, and its lag-1 autocorrelation phi gives the correlation time
    -step / ln(phi). The floor is the `floor_quantile` quantile of the values.
    Weekly offsets need 14 days of data and annual harmonics 365 days; shorter
    traces get zeros for them.
    """
    if daily_harmonics < 0 or annual_harmonics < 0:
        raise ValueError(
            f"harmonic counts must be >= 0, got daily_harmonics={daily_harmonics} and "
            f"annual_harmonics={annual_harmonics}"
        )
    if not 0 <= floor_quantile <= 1:
        raise ValueError(f"floor_quantile must lie in [0, 1], got {floor_quantile}")
    span_days = trace.steps * trace.step_seconds / DAY_SECONDS
    if span_days < MIN_CALIBRATION_DAYS:
        raise ValueError(
            f"calibration needs at least {MIN_CALIBRATION_DAYS} days of data, the trace "
            f"covers {span_days:.2f}"
        )
    weekly = span_days >= MIN_WEEKLY_DAYS
    annual = annual_harmonics if span_days >= MIN_ANNUAL_DAYS else 0
    times = trace.start + trace.step_seconds * np.arange(trace.steps, dtype=np.int64)
    periodic = _design_matrix(times, daily=daily_harmonics, weekly=weekly, annual=annual)
    design = np.column_stack([np.ones(trace.steps), periodic])
    step_hours = trace.step_seconds / HOUR_SECONDS

    profiles = {}
    for name, values in zip(trace.regions, trace.values):
        mean = float(values.mean())
        if mean <= 0:
            raise ValueError(f"cannot calibrate {name}: its mean intensity is 0")
        coefficients = np.linalg.lstsq(design, values - mean, rcond=None)[0]
        level = mean + design @ coefficients

        # NOTE: values and levels below 1% of the mean are raised to it before the
        # log, so hours of near-zero intensity do not dominate the weather estimate.
        small = 0.01 * mean
        weather = np.log(np.maximum(values, small) / np.maximum(level, small))
        weather -= weather.mean()
        log_sd = float(weather.std())
        phi = 0.0
        if log_sd > 1e-12 and weather.size > 2:
            phi = float(np.dot(weather[:-1], weather[1:]) / np.dot(weather, weather))
        # A correlation below 0.001 per step means no memory worth modelling.
        phi = min(max(phi, 1e-3), 1 - 1e-9)

        # Coefficient layout: intercept, daily pairs, weekday columns, annual pairs.
        daily_count = 2 * daily_harmonics
        weekday_count = WEEK_DAYS - 1 if weekly else 0
        daily_part = coefficients[1 : 1 + daily_count]
        weekday_part = coefficients[1 + daily_count : 1 + daily_count + weekday_count]
        annual_part = coefficients[1 + daily_count + weekday_count :]
        if weekly:
            # Sum-to-zero coding: Sunday's offset is minus the sum of the others.
            weekly_offsets = (*weekday_part.tolist(), -float(weekday_part.sum()))
        else:
            weekly_offsets = (0.0,) * WEEK_DAYS
        if not annual:
            annual_part = np.zeros(2 * annual_harmonics)

        profiles[name] = RegionProfile(
            mean_g_per_kwh=mean,
            daily_harmonics_g_per_kwh=_pairs(daily_part),
            weekly_offsets_g_per_kwh=tuple(float(v) for v in weekly_offsets),
            annual_harmonics_g_per_kwh=_pairs(annual_part),
            weather_log_sd=log_sd,
            weather_correlation_hours=-step_hours / math.log(phi),
            floor_g_per_kwh=float(np.quantile(values, floor_quantile)),
        )
    return profiles


# Output of calibrate() with default options on the recorded hourly Electricity
# Maps LCA data for 2022-2023 of zones GB, US-MIDA-PJM and KR (traces/README.md
# describes it). The numbers are rounded to 0.01 g/kWh, 4 decimals for
# weather_log_sd and 0.1 h for the correlation time. tests/test_synthetic.py
# recalibrates from that data and checks them.
DEFAULT_PROFILES: Mapping[str, RegionProfile] = MappingProxyType(
    {
        # GB: low mean, large swings with the wind over several days.
        "eu-west": RegionProfile(
            mean_g_per_kwh=204.75,
            daily_harmonics_g_per_kwh=(
                (14.75, -10.57), (-19.91, -8.44), (0.13, 0.45), (0.84, 1.98)
            ),
            weekly_offsets_g_per_kwh=(6.93, 17.78, 7.56, 12.43, 5.6, -22.08, -28.22),
            annual_harmonics_g_per_kwh=((-11.01, -3.11), (-3.23, 4.83)),
            weather_log_sd=0.4146,
            weather_correlation_hours=49.8,
            floor_g_per_kwh=51.29,
        ),
        # PJM: fossil-heavy, high mean, small daily swing.
        "us-east": RegionProfile(
            mean_g_per_kwh=408.45,
            daily_harmonics_g_per_kwh=(
                (7.18, -4.66), (6.56, 3.76), (0.48, 1.63), (-0.03, -0.08)
            ),
            weekly_offsets_g_per_kwh=(1.68, 6.99, 5.57, 2.92, 1.09, -7.39, -10.86),
            annual_harmonics_g_per_kwh=((-6.43, -1.31), (20.11, 27.12)),
            weather_log_sd=0.0772,
            weather_correlation_hours=79.6,
            floor_g_per_kwh=318.12,
        ),
        # KR: highest mean, with a solar dip around 03Z (noon in Seoul).
        "asia-east": RegionProfile(
            mean_g_per_kwh=446.3,
            daily_harmonics_g_per_kwh=(
                (-10.7, -6.37), (2.77, -7.36), (1.56, -1.42), (-0.07, -0.16)
            ),
            weekly_offsets_g_per_kwh=(8.02, 11.89, 12.43, 11.64, 3.75, -25.35, -22.38),
            annual_harmonics_g_per_kwh=((3.1, 0.37), (13.23, 10.26)),
            weather_log_sd=0.0524,
            weather_correlation_hours=32.1,
            floor_g_per_kwh=296.89,
        ),
    }
)


def _standard_normals(seed: int, region: str, count: int) -> list[float]:
    """Draw `count` standard normal numbers from a stream fixed by the seed and the
    region name.

    numpy's compatibility policy promises the same `Generator.standard_normal`
    output only on the same numpy build. The demo trace must stay byte-identical
    across numpy upgrades, so this draws raw 64-bit words from PCG64 seeded
    through SeedSequence, both fixed algorithms, and applies the Box-Muller
    transform in plain Python.
    """
    key = np.random.SeedSequence([seed, zlib.crc32(region.encode("utf-8"))])
    pairs = (count + 1) // 2
    words = np.random.PCG64(key).random_raw(2 * pairs).tolist()
    scale = 2.0**-53
    normals: list[float] = []
    for k in range(pairs):
        # The top 53 bits give a uniform double; adding 1 keeps u1 in (0, 1] for the log.
        u1 = ((words[2 * k] >> 11) + 1) * scale
        u2 = (words[2 * k + 1] >> 11) * scale
        radius = math.sqrt(-2.0 * math.log(u1))
        angle = 2.0 * math.pi * u2
        normals.append(radius * math.cos(angle))
        normals.append(radius * math.sin(angle))
    return normals[:count]


def _weather_series(shocks: list[float], step_seconds: int, profile: RegionProfile) -> np.ndarray:
    """Turn standard normal shocks into the log weather factor: an AR(1) series that
    starts in its stationary distribution, with coefficient exp(-step / tau)."""
    sd = profile.weather_log_sd
    phi = math.exp(-step_seconds / (profile.weather_correlation_hours * HOUR_SECONDS))
    innovation_sd = sd * math.sqrt(1 - phi * phi)
    weather = [0.0] * len(shocks)
    state = sd * shocks[0]
    weather[0] = state
    for i in range(1, len(shocks)):
        state = phi * state + innovation_sd * shocks[i]
        weather[i] = state
    return np.asarray(weather)


def _unix_seconds(start: int | datetime) -> int:
    if isinstance(start, datetime):
        if start.utcoffset() is None:
            raise ValueError(
                f"start {start.isoformat()} has no time zone; pass an aware datetime "
                "such as datetime(2023, 1, 1, tzinfo=timezone.utc)"
            )
        return int(start.timestamp())
    if isinstance(start, bool) or not isinstance(start, int):
        raise TypeError(f"start must be Unix seconds (int) or a datetime, got {start!r}")
    return start


def synthesize(
    start: int | datetime,
    days: int,
    *,
    seed: int,
    profiles: Mapping[str, RegionProfile] = DEFAULT_PROFILES,
    step_seconds: int = 3600,
) -> Trace:
    """Generate `days` days of intensities from `start` (Unix seconds or an aware
    datetime), one region per entry of `profiles`, in that order.

    The same seed, profiles and grid give the same trace. Each region draws from
    its own random stream, derived from the seed and the region name, so adding or
    removing a region leaves the others unchanged.
    """
    # NOTE: numpy's vectorised exp and cos may differ in the last bit between CPUs.
    # Such a difference changes the output only when a value falls within that bit of
    # a rounding boundary (x.xx5), so the demo file is identical in practice, not by
    # construction.
    first = _unix_seconds(start)
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if step_seconds <= 0 or DAY_SECONDS % step_seconds:
        raise ValueError(
            f"step_seconds must divide a day (86400 s) evenly, got {step_seconds!r}"
        )
    if not profiles:
        raise ValueError("profiles is empty; give at least one region")

    steps = days * DAY_SECONDS // step_seconds
    times = first + step_seconds * np.arange(steps, dtype=np.int64)
    rows = []
    for name, profile in profiles.items():
        weather = _weather_series(_standard_normals(seed, name, steps), step_seconds, profile)
        factor = np.exp(weather - profile.weather_log_sd**2 / 2)
        values = np.maximum(profile.floor_g_per_kwh, profile.level(times) * factor)
        rows.append(np.round(values, 2))
    return Trace(
        tuple(profiles),
        first,
        step_seconds,
        np.vstack(rows),
        (f"synthetic: carbon_scheduler.carbon.synthetic, seed {seed}",),
    )


def make_demo_trace(
    path: PathLike | None = None,
    *,
    seed: int = DEMO_SEED,
    start: int | datetime = DEMO_START,
    days: int = DEMO_DAYS,
    step_seconds: int = DEMO_STEP_SECONDS,
) -> Trace:
    """Generate the demo trace (by default 365 hourly days from 2023-01-01T00:00Z,
    seed 2026, regions eu-west, us-east and asia-east) and write it to `path` in the
    long layout when a path is given. With the defaults the file is byte-identical
    to traces/demo.csv."""
    trace = synthesize(start, days, seed=seed, step_seconds=step_seconds)
    if path is not None:
        write_trace(trace, path)
    return trace
