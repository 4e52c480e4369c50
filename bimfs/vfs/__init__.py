"""The filesystem layer: every POSIX decision bimfs makes, without pyfuse3.

Where things are (a read and a save follow the order given in ``filesystem.py``):

``filesystem``  the ``Filesystem`` facade: the POSIX entry points, each delegating below
``tree``        the inode table, the node indices, lookup counting, kernel invalidation hooks
``nodes``       directory and file nodes, local content (``LocalData``), ``Attr``
``keys``        typed identities: ``NodeKey`` (which upload target) and ``UploadTarget``
``listing``     directory listings: loading, caching, our own changes, building entries
``names``       safe, stable, deduplicated names; version file names; local-only patterns
``rights``      Bimplus rights as modes, and one ``require_*`` per rule
``attrs``       what ``stat`` and ``statfs`` show
``handles``     open files and open directories (the snapshot readdir serves)
``reads``       reading local content or a version through the content cache
``staging``     the local copy a save is written into, and its one way into the journal
``renames``     rename and the editor save patterns (temp-then-rename, vim's backup)
``uploads``     sending journal entries, reconciling answers; streaming while written
``xattrs``      extended attributes; the mount's status and sync on the root
``status``      the status document and its pages
``remote``      the ``Remote`` protocol: what this layer needs from Bimplus
``errors``      ``FsError`` and error helpers
``background``  where background tasks start
"""

from bimfs.vfs.filesystem import Filesystem

__all__ = ["Filesystem"]
