"""The payloads asset keeps freed heap memory mapped between render batches (glibc)."""

import ctypes.util
import platform

import pytest

from personalization_assets import heap


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_glibc_takes_the_trim_threshold_and_zero_leaves_it_alone():
    assert ctypes.util.find_library("c")
    assert heap.retain_freed_heap(0) is False
    assert heap.retain_freed_heap(64) is True
    # Only ever raised: a smaller value later is a no-op that still reports success.
    assert heap.retain_freed_heap(1) is True
    assert heap._retained >= 64 * 1024 * 1024
