"""Metrics shared by the daemon and the replay simulator."""
