"""Step logs in object storage, readable while the step runs (DESIGN §7, issue: live logs).

Layout for a log ``key`` (``pipeline-runs/<run>/logs/<phase>/<project>/<step>.log``):

* while the step runs, the writer uploads numbered chunks ``<key>.parts/<seq:010d>`` (a step that
  ends before the first flush writes none: its log is one PUT of ``<key>``); a writer that takes the
  log over (a retried attempt, a redelivery after a worker died) writes the next generation,
  ``<key>.parts/g<gen:04d>-<seq:010d>``, whose first chunk holds everything stored before it;
* when it closes, it writes the whole log to ``<key>`` and then deletes the chunks it wrote;
* a worker that dies after its step's outcome was settled leaves a ``LogCheckpoint``, from which
  the job's redelivery ``seal``-s the log without running the step again.

A reader returns ``<key>`` when it exists (the log is complete), else the newest generation's chunks
so far in order. Both sides speak only the ``ObjectStore`` port.
"""

from forge.logs.reader import LogReader, StoredLog, log_key
from forge.logs.writer import LogCheckpoint, LogWriter, seal

__all__ = ["LogCheckpoint", "LogReader", "LogWriter", "StoredLog", "log_key", "seal"]
