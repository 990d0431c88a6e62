/* SPDX-License-Identifier: MIT */
/* Private: RUNNING_ON_VALGRIND, 0 where valgrind's header is not installed. */
#ifndef CPR_HANDOVER_ON_VALGRIND_H
#define CPR_HANDOVER_ON_VALGRIND_H

#if defined(__has_include)
# if __has_include(<valgrind/valgrind.h>)
#  include <valgrind/valgrind.h>
# endif
#endif
#ifndef RUNNING_ON_VALGRIND
# define RUNNING_ON_VALGRIND 0
#endif

#endif
