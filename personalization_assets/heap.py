"""Keep freed heap memory in the process instead of handing it back to the OS after each batch.

Rendering keeps a batch of payloads (about 12 KB of strings each) until they are stored, then
frees them. glibc returns freed memory at the top of the heap to the kernel as soon as more
than its trim threshold (128 KiB, raised only after large ``mmap`` blocks are freed) is free,
so every batch touches fresh pages again: about two page faults per payload, which cost
~8 µs of a ~44 µs render on these VMs (``bench/render_bench.py`` shows both). Raising the trim
threshold once lets the next batch reuse the same, already mapped pages.

Only glibc has ``mallopt``; elsewhere (musl, macOS) this is a no-op that says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>


@lru_cache(maxsize=1)
def _mallopt():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).mallopt
    except (OSError, AttributeError):
        return None


def retain_freed_heap(megabytes: int) -> bool:
    """Keep up to `megabytes` of freed heap mapped; True when the allocator took the setting.

    0 leaves the allocator alone. The setting is process-wide and only ever raised here, so
    callers with different values do not undo each other within one run worker.
    """
    if megabytes <= 0:
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    wanted = megabytes * 1024 * 1024
    global _retained
    if wanted <= _retained:
        return True
    if mallopt(M_TRIM_THRESHOLD, ctypes.c_int(min(wanted, 2**31 - 1))) != 1:
        return False
    _retained = wanted
    return True


_retained = 0
