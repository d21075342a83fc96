import os
import subprocess
import sys

import pytest

# Prints whether applied, then the MB a 64 MB malloc added to mmapped blocks, and to the heap after its free
# (glibc's mallinfo2).
PROBE = """
import ctypes, sys
from fer.malloc import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                                 "fordblks keepcost").split()]
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = Info, ctypes.c_void_p, [ctypes.c_void_p]
before = libc.mallinfo2()
block = libc.malloc(64 << 20)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(applied, (during.hblkhd - before.hblkhd) >> 20, (after.arena - before.arena) >> 20)
"""


def _probe(mode: str, **env: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0], int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="glibc only")
def test_large_blocks_come_from_the_heap_and_stay_after_free():
    applied, mmapped, heap_after_free = _probe("keep")
    assert applied == "True" and mmapped == 0 and heap_after_free >= 60
    applied, mmapped, heap_after_free = _probe("default")
    assert applied == "False" and mmapped >= 64 and heap_after_free < 60  # glibc's own behaviour
    applied, mmapped, _ = _probe("keep", MALLOC_MMAP_MAX_="65536")  # the user's setting wins
    assert applied == "False" and mmapped >= 64
