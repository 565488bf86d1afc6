"""The report layer: what lolctl tells its user, in one place.

- ``records``: typed records (score, error, gate check and result), one schema each (docs/schema.md);
- ``output``: :class:`Output`, the only code that knows ``--format`` (table, json, jsonl, csv; html to a file);
- ``reports``: what each command reports, in every format; ``health``, ``tables``, ``diff``: the Rich renderers;
- ``html`` (with ``adapter``, ``svg``, ``style``): the self-contained HTML audit report; ``documents``: record files
  read back into one document for it;
- ``encode``: strict JSON and flattened CSV rows (used by library code that writes records, e.g. a scan file).
"""

from lolctl.report.encode import dumps
from lolctl.report.output import Output

__all__ = ["Output", "dumps"]
