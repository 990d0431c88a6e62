/* SPDX-License-Identifier: MIT */
/* The guest of mailbox version 1 (release 1.0), from the same source: see guest.S. */
#define VMM_GUEST_ABI 1
#define GUEST_SYM(name) vmm_guest1_##name
#include "guest.S"
