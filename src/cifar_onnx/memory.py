"""Give freed image memory back to the operating system at once.

glibc serves large allocations with mmap only above a threshold that it raises as they are freed
(up to 32 MB), after which Pillow's 16 MB image blocks come from per-thread heaps and stay there:
each decoding thread kept its last big image, and concurrent large decodes pushed the service past
its memory limit although the decode budget admits one at a time (README, "Configuration", has the
measured peak). A fixed threshold of 1 MB makes every image block an mmap that is unmapped on free.
No-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD_BYTES = 1 << 20


def release_large_allocations() -> bool:
    """Fix glibc's mmap threshold; True when it took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
