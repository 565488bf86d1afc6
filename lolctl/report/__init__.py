"""The report layer: renderers of score records (the HTML audit report: lolctl.report.html)."""
