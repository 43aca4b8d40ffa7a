"""Logs -> tidy tables (collect.py) -> metrics (metrics.py) -> seaborn figures (figures.py)."""

# The figures every study gets; the workflow names its outputs after them.
FIGURE_NAMES = ("throughput", "scaling_efficiency", "time_to_accuracy", "accuracy_vs_time")
