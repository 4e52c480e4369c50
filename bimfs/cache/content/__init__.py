"""The on-disk content cache: document bytes under ``<cache-dir>/content/``, bounded by a budget.

Layout and durability
    ``<digest>.part`` is an entry being filled: a sparse file truncated to the document's size,
    written at the right offsets as bytes arrive. Which blocks are filled is tracked in memory
    (``BlockSet``). When every block is present the file is fsynced and renamed to ``<digest>``,
    and only then recorded complete in the index (``index.db``, SQLite). A partial file is never
    served as complete: readers of a partial entry read only blocks marked filled, or bytes a
    running stream has received without a gap, and a block is marked only after all of its bytes
    were written. The bitmap of a partial entry is stored in the index after the entry was closed
    and its data fsynced, so a remount continues where the last one stopped; an unsynced bitmap
    is never stored.

Reads and streams
    ``open`` starts nothing. A read waits only for the bytes it needs, not for whole blocks: it
    is answered as soon as a stream has them. A missing block starts a background stream that
    reads ahead, within a window that starts at ``read_ahead`` (one block) and grows while its
    reader reads on; far reads and slow streams get parallel range streams (``streams``).
    Streams stop when the last handle of their entry is closed: a reader that stopped early (a
    ``head``, a thumbnailer) makes the mount download about one block of a large file.

Errors
    A stream that breaks off is retried; then the reads waiting on it fail with the download's
    own error, unchanged (the errno table maps it). A body longer than the key's size raises
    ``ContentSizeError``. A read never waits past ``read_timeout``: ``ContentTimeoutError``.
    A read never fails because of the cache disk (see "Room on the disk").

Eviction
    Least recently used first (by open/close), down to ``max_bytes``, and until the disk has
    ``min_free`` bytes free (by default 1/16 of it, at most 64 MiB, left for saves and the
    journal); an entry that is open, streaming or being finalised is never evicted, so an open
    file may push the cache over its budget until it is closed.

Room on the disk
    Before a stream writes the first byte of an entry, the store makes sure the disk has room
    for the rest of it, evicting least recently used entries if (and only if) that makes it
    fit. Content that does not fit, and content whose write fails all the same (ENOSPC or
    EDQUOT after evicting what could be, any other error at once, or a failed fsync), is
    *passed through*: its file streams stop, its partial file and row are deleted, and its
    reads are served by memory streams from a bounded window of received bytes, without being
    kept. Such an entry is detached from its key once its file is gone, so the next open of the
    key tries to keep the content again: the cache recovers as soon as there is room.
    ``ensure_complete`` of content that cannot be kept raises ``CacheFullError`` (ENOSPC). An
    index that cannot be written is logged once and catches up later; one that cannot even be
    opened (a full disk at start) is read into memory for the run.

Concurrency
    Everything runs on the trio thread; code between two awaits is atomic, which is what keeps
    the stream bookkeeping (positions, ends, block map, write queues) consistent without locks.
    Writes go to a worker thread only while they are slow (``writer``); fsyncs, which may wait
    for the disk, always run in worker threads.

Modules, bottom up: ``keys`` (ContentKey, Download, Fetcher, CachedFile), ``index`` (the SQLite
index and the files it describes), ``entries`` (an entry in memory, filled ranges, waiting
reads), ``writer`` (inline or write-behind), ``streams`` (starting, splitting, running and
retrying downloads), ``store`` (ContentStore, the facade).
"""

from bimfs.cache.content.keys import CachedFile, ContentKey, Download, Fetcher
from bimfs.cache.content.store import ContentStore

__all__ = ["CachedFile", "ContentKey", "ContentStore", "Download", "Fetcher"]
