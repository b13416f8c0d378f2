#ifndef COLONY_CMEMORYMAPSHIM_H
#define COLONY_CMEMORYMAPSHIM_H

#include <stdint.h>

/// Sleeps while `*word == expected`, until woken or until the absolute CLOCK_MONOTONIC
/// deadline `deadline_ns` (0 means no deadline). Process-private futex.
/// Returns 0 when woken (or spuriously), otherwise an errno value: EAGAIN when the word
/// had already changed, ETIMEDOUT when the deadline passed, EINTR on a signal.
int colony_futex_wait(uint32_t *word, uint32_t expected, uint64_t deadline_ns);

/// Wakes at most `count` threads sleeping on `word`. Returns how many were woken.
int colony_futex_wake(uint32_t *word, int count);

/// The kernel's id of the calling thread (gettid(2)).
int64_t colony_gettid(void);

/// CLOCK_MONOTONIC now, in nanoseconds.
uint64_t colony_monotonic_ns(void);

/// pthread_self() of the thread that ran the program's static constructors: the main thread.
unsigned long colony_main_thread_ident(void);

/// A CPU hint for spin-wait loops (`pause` on x86, `yield` on ARM).
void colony_cpu_relax(void);

#endif
