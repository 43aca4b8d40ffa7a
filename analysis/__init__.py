"""Logs -> tidy tables (collect.py) -> metrics (metrics.py) -> seaborn figures (figures.py)."""

# The figures every study gets; the workflow names its outputs after them.
FIGURE_NAMES = ("throughput", "throughput_vs_batch", "scaling_efficiency", "time_to_accuracy", "accuracy_vs_time")
# Lab 1's figures (analysis/lab1_figures.py), for studies that record (w, b) after each update.
LAB1_FIGURE_NAMES = ("loss_curves", "trajectories")
# The course's assessment (analysis/assessment.py), for studies that set time_budget_s.
ASSESSMENT_FIGURE_NAMES = ("assessment",)
