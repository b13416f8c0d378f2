#ifndef COLONY_CMEMORYMAPSHIM_H
#define COLONY_CMEMORYMAPSHIM_H

#include <stddef.h>
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

/// mremap(2) with MREMAP_MAYMOVE (variadic in C, so Swift cannot call it): the new
/// address, or MAP_FAILED with errno set.
void *colony_mremap(void *address, size_t old_size, size_t new_size);

/// memfd_create(2) with MFD_CLOEXEC: an anonymous memory file, or -1 and errno.
int colony_memfd_create(const char *name);

/// pipe2(2) with O_CLOEXEC: `ends[0]` reads what `ends[1]` writes; 0, or -1 and errno.
/// (Swift's Glibc module does not carry pipe2, a GNU extension.)
int colony_pipe_cloexec(int ends[2]);

/// pidfd_open(2): a descriptor that becomes readable when process `pid` exits; -1 and errno
/// when the kernel has no pidfds.
int colony_pidfd_open(int pid);

/// epoll_create1(EPOLL_CLOEXEC): a new epoll set, or -1 and errno. (Swift's Glibc module
/// does not carry <sys/epoll.h>.)
int colony_epoll_create(void);

/// Adds `fd` to the epoll set `epfd`, level-triggered, for readability. 0, or -1 and errno.
int colony_epoll_watch_readable(int epfd, int fd);

/// epoll_wait(2) without waiting: how many watched descriptors are ready now (at most one is
/// reported), or -1 and errno.
int colony_epoll_ready_now(int epfd);

/// How many CPUs this thread may run on (sched_getaffinity(2), as `taskset` sets it); 0 when
/// the kernel does not say.
int colony_cpus_in_affinity(void);

/// Nanoseconds the calling thread has spent runnable but waiting for a CPU, from
/// /proc/thread-self/schedstat; -1 where the kernel does not keep it.
int64_t colony_thread_cpu_wait_ns(void);

/// prctl(PR_SET_PDEATHSIG, signal): this process gets `signal` when its parent thread exits.
int colony_set_parent_death_signal(int signal);

/// Initializes a process-shared robust mutex (recursive when `recursive` is non-zero) in
/// shared memory at `mutex` (a pthread_mutex_t). Returns 0 or an errno value.
int colony_robust_mutex_init(void *mutex, int recursive);

/// Locks a mutex, waiting until the absolute CLOCK_MONOTONIC `deadline_ns` (0: no deadline).
/// Returns 0, EOWNERDEAD (locked; the previous owner died holding it), ETIMEDOUT, EBUSY
/// (`try_only` and taken), or another errno value.
int colony_mutex_lock_until(void *mutex, uint64_t deadline_ns, int try_only);

/// colony_futex_wait for a word in memory shared between processes (no PRIVATE flag).
int colony_futex_wait_shared(uint32_t *word, uint32_t expected, uint64_t deadline_ns);

/// colony_futex_wake for a word in memory shared between processes.
int colony_futex_wake_shared(uint32_t *word, int count);

/// Bytes malloc has handed out now (mallinfo2's uordblks plus hblkhd), for benchmarks that
/// report memory per item.
size_t colony_heap_bytes_in_use(void);

/// Lets malloc keep freed memory for reuse instead of handing it back to the kernel at once:
/// blocks up to 32 MiB come from the heap (not a fresh mmap each), and up to 256 MiB of free
/// heap top stays mapped. A server that builds and drops multi-megabyte messages otherwise
/// pays a page fault per 4 KiB each time. Same as MALLOC_MMAP_THRESHOLD_=33554432
/// MALLOC_TRIM_THRESHOLD_=268435456 in the environment.
void colony_keep_freed_memory(void);

#endif
