"""`ecg-tune report`: a sweep's results as tables, plots and one HTML page (build.py assembles them).

- data.py: the sweep read back (settings, MLflow runs, artifacts); tables.py, results.py, paired.py,
  paper.py, stats.py: the tables and their statistics; importance.py: parameter importances;
  plots.py: figures; html_page.py: the page.
"""

from ecg_tune.tune.report.build import OUTPUTS, build_report

__all__ = ["OUTPUTS", "build_report"]
