"""The comparison report, rebuilt at any time from the finished runs' ``eval.json`` files.

One module per job: ``records`` reads the run folders, ``stats`` holds the
estimators and the bootstrap, ``verdict`` compares model-based with model-free
learners from an interval on the gap, ``summary`` computes the report's numbers,
``tables`` and ``plots`` present them, ``render`` writes report.md, report.html
and plots/*.png, and ``more_seeds`` names the command that adds seeds to a
compare whose verdicts have too few.
"""

from workflows.report.records import RunRecord, score_of
from workflows.report.render import ReportPaths, write_report
from workflows.report.summary import CellSummary, ReportData, summarize
from workflows.report.tables import terminal_summary
from workflows.report.verdict import MIN_SEEDS, Comparison

__all__ = [
    "MIN_SEEDS",
    "CellSummary",
    "Comparison",
    "ReportData",
    "ReportPaths",
    "RunRecord",
    "score_of",
    "summarize",
    "terminal_summary",
    "write_report",
]
