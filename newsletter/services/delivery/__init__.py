"""The delivery engine: every confirmed, non-suppressed subscriber gets a digest exactly once.

    pending --claim (lease)--> SMTP --250--> sent
       ^                        |--4xx / dropped line--> deferred (next_attempt_at: back-off + jitter)
       |                        |--5xx--> failed (and "no such user" suppresses the address)
       |                        '--unsubscribed / suppressed since the fan-out--> skipped
       '-- lease expired (worker died: its live thread renews it no more), or deferred and due: claimable again

One module per job: fanout, claims, leases, sent_marks, send_loop, control (and throttle, progress).
The database is the truth; a lost task or a dead worker only delays rows (docs/ARCHITECTURE.md, "Delivery").
"""

from .claims import OPEN, Claimed, claim, record_outcome, replay_journals
from .control import cancel, counts, finish_if_complete, pause, resume, status, sweep, wait_for
from .fanout import batch_ranges, enqueue_ranges, start_sending
from .progress import progress
from .send_loop import Mailer, Messenger, _recipients, is_no_such_user, process_mailer, send_range
from .sent_marks import JOURNAL_KEY, SentMarker, process_marker

__all__ = [
    "JOURNAL_KEY", "OPEN", "Claimed", "Mailer", "Messenger", "SentMarker", "_recipients", "batch_ranges", "cancel",
    "claim", "counts", "enqueue_ranges", "finish_if_complete", "is_no_such_user", "pause", "process_mailer",
    "process_marker", "progress", "record_outcome", "replay_journals", "resume", "send_range", "start_sending", "status",
    "sweep", "wait_for",
]
