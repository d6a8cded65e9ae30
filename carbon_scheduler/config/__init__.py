"""Configuration: the settings types and the loader of `regions.toml`."""

from carbon_scheduler.config.errors import ConfigError, ConfigIssue
from carbon_scheduler.config.loading import load_config, parse_config
from carbon_scheduler.config.types import (
    AbsoluteLevels,
    CarbonSourceKind,
    CarbonSourceSpec,
    Config,
    EnergyModel,
    LevelThresholds,
    RegionSpec,
    RelativeLevels,
    SchedulerSettings,
)

__all__ = [
    "AbsoluteLevels",
    "CarbonSourceKind",
    "CarbonSourceSpec",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "EnergyModel",
    "LevelThresholds",
    "RegionSpec",
    "RelativeLevels",
    "SchedulerSettings",
    "load_config",
    "parse_config",
]
