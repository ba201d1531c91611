"""When to look at a running task again: the schedule a client polls with.

Most programs never need this module: the client's default
:class:`AdaptiveSchedule` learns how long rounds take, per model, and looks
just after a round or the end is due. Give a client (or a view of one) another
schedule to change that::

    from spo_async.polling import FixedSchedule

    fixed = client.with_options(schedule=FixedSchedule(interval=5.0))

A schedule is any :class:`PollSchedule` (one method, ``next_delay``) or a plain
function of :class:`PollState` returning seconds; the poll loop hands it to
tenacity as its wait strategy, caps it at the caller's deadline, and uses the
retry policy's backoff after failures instead.
"""

from ._adaptive import AdaptiveSchedule
from ._schedules import ExponentialSchedule, FixedSchedule, PollMode, PollSchedule, PollState

__all__ = [
    "AdaptiveSchedule",
    "ExponentialSchedule",
    "FixedSchedule",
    "PollMode",
    "PollSchedule",
    "PollState",
]
