"""Collect nb360 results and build the NAS-Bench-360 paper's tables and performance profiles (torch-free)."""

from nb360.report.collect import Row, collect
from nb360.report.profiles import performance_profile, plot_profile
from nb360.report.reference import PAPER_METHODS, reference_rows
from nb360.report.tables import improvement_over, median_ranks, table2, table3

__all__ = [
    "Row",
    "collect",
    "table2",
    "table3",
    "median_ranks",
    "improvement_over",
    "performance_profile",
    "plot_profile",
    "reference_rows",
    "PAPER_METHODS",
]
