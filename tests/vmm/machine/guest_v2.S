/* SPDX-License-Identifier: MIT */
/* The guest of mailbox version 2 (release 1.1), from the same source: see guest.S. */
#define VMM_GUEST_ABI 2
#define GUEST_SYM(name) vmm_guest2_##name
#include "guest.S"
