# SPDX-License-Identifier: MIT
"""tests/bench/run: the libcpr vs QEMU comparison of issue 7."""
