"""The library's error for a bad or missing input.

Library code (``asr_kd/{data,align,nn,decoding}``) takes plain arguments and knows nothing of a run
directory or its stages; when an input it is handed is missing or bad it raises :class:`InputError`,
whose message names the file and what to do (re-run the stage that writes it, change a ``--set``).
The stage runner (:mod:`asr_kd.runner`) turns it into the stage's ``StageError``; the command lines
print either as one ``error:`` line.
"""

from __future__ import annotations


class InputError(RuntimeError):
    """An input is missing or bad: the message names the file and says what to do."""
