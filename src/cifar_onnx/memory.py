"""Give freed memory back to the operating system: image blocks at once, the heap after loading.

glibc serves large allocations with mmap only above a threshold that it raises as they are freed
(up to 32 MB), after which Pillow's 16 MB image blocks come from per-thread heaps and stay there:
each decoding thread kept its last big image, and concurrent large decodes pushed the service past
its memory limit although the decode budget admits one at a time (README, "Configuration", has the
measured peak). A fixed threshold of 1 MB makes every image block an mmap that is unmapped on free.
Loading the models frees much (the self-check's reference sessions, the model files' bytes) in
small blocks that glibc keeps in its heaps; `trim_heap` returns their whole pages once loaded.
No-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD_BYTES = 1 << 20


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def release_large_allocations() -> bool:
    """Fix glibc's mmap threshold; True when it took effect."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))


def trim_heap() -> bool:
    """Return the free pages of every glibc heap to the system; True when some were."""
    libc = _glibc()
    return bool(libc and libc.malloc_trim(0))
