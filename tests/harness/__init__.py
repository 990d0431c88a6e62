# SPDX-License-Identifier: MIT
"""The Python test harness of libcpr: the one place that starts and drives VMM processes.

process   one VMM process (cpr-vmm or QEMU), its QMP and HMP monitors; one killer at exit
qmp       the QMP client (keeps every event with its timestamp)
host      host and process facts: KVM usable, the machine, memfds mapped, RSS and fds
guest     cpr-vmm's test guest: command line, heartbeat, RAM re-verify, serial console checks
channels  migration channels as QMP spells them
reports   sanitizer and valgrind findings in the VMMs' logs
rollback  adopting the image a cpr-exec guardian exec'd back
netns     two "hosts": network namespaces joined by a veth pair, optionally shaped (tbf)

Used by tests/integration, tests/bench (run, soak, smoke.py, benchlib), tests/compat/run-matrix,
tests/vmm/demo and tests/run-memcheck; see README.md here for how they find it.
"""
