"""Logs -> tidy tables (collect.py) -> metrics (metrics.py) -> seaborn figures (figures.py) -> the
answer: critical batch, scaling model, fastest and cheapest configuration (answer.py)."""

# The figures every study gets; the workflow names its outputs after them.
FIGURE_NAMES = ("throughput", "throughput_vs_batch", "scaling_efficiency", "time_to_accuracy", "accuracy_vs_time")
# Lab 1's figures (analysis/lab1_figures.py), for studies that record (w, b) after each update.
LAB1_FIGURE_NAMES = ("loss_curves", "trajectories")
# The course's assessment (analysis/assessment.py), for studies that set time_budget_s.
ASSESSMENT_FIGURE_NAMES = ("assessment",)
# The study's answer (analysis/answer.py, analysis/answer_figures.py), for every study.
ANSWER_FIGURE_NAMES = ("noise_scale", "steps_to_target", "tta_decomposition", "pareto", "holdout")
ANSWER_FILES = ("answer.md", "answer.json", "predictions.csv", "holdout.csv")
# How the analysis commands log their phases' seconds ("time: collect 1.23 s"), for benchmarks/grid_scale.py.
TIMING_PREFIX = "time: "
