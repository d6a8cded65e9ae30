"""Forecasters of grid carbon intensity, looked up by name."""

from carbon_scheduler.forecasting.autoregressive import LinearAutoregressive
from carbon_scheduler.forecasting.base import Forecaster, Persistence, SeasonalNaive
from carbon_scheduler.forecasting.ensemble import HorizonBlend
from carbon_scheduler.forecasting.profile import DailyProfile, WeeklyProfile

FORECASTERS: dict[str, type] = {
    Persistence.name: Persistence,
    SeasonalNaive.name: SeasonalNaive,
    DailyProfile.name: DailyProfile,
    WeeklyProfile.name: WeeklyProfile,
    LinearAutoregressive.name: LinearAutoregressive,
    HorizonBlend.name: HorizonBlend,
}


def make_forecaster(name: str) -> Forecaster:
    """Return a new forecaster by name; raise ValueError naming the known ones."""
    try:
        return FORECASTERS[name]()
    except KeyError:
        known = ", ".join(sorted(FORECASTERS))
        raise ValueError(f"unknown forecaster {name!r}; use one of: {known}") from None


__all__ = [
    "FORECASTERS",
    "DailyProfile",
    "Forecaster",
    "HorizonBlend",
    "LinearAutoregressive",
    "Persistence",
    "SeasonalNaive",
    "WeeklyProfile",
    "make_forecaster",
]
