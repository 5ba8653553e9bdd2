"""Step logs in object storage, readable while the step runs (DESIGN §7, issue: live logs).

Layout for a log ``key`` (``pipeline-runs/<run>/logs/<phase>/<project>/<step>.log``):

* while the step runs, the writer uploads numbered chunks ``<key>.parts/<seq:010d>`` (a step that
  ends before the first flush writes none: its log is one PUT of ``<key>``);
* when it closes, it writes the whole log to ``<key>`` and then deletes the chunks it wrote.

A reader returns ``<key>`` when it exists (the log is complete), else the chunks so far in order.
Both sides speak only the ``ObjectStore`` port.
"""

from forge.logs.reader import LogReader, log_key
from forge.logs.writer import LogWriter

__all__ = ["LogReader", "LogWriter", "log_key"]
