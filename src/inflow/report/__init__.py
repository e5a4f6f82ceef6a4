"""The results report: summary table (reports/summary.json), composition of each selection, plots."""
