#define _GNU_SOURCE
#include "CMemoryMapShim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <limits.h>
#include <malloc.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int colony_futex_wait(uint32_t *word, uint32_t expected, uint64_t deadline_ns) {
    struct timespec ts;
    struct timespec *timeout = NULL;
    if (deadline_ns != 0) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000ull);
        ts.tv_nsec = (long)(deadline_ns % 1000000000ull);
        timeout = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so spurious wake-ups
       never stretch the total wait. */
    long rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, timeout,
                      NULL, FUTEX_BITSET_MATCH_ANY);
    return rc == 0 ? 0 : errno;
}

int colony_futex_wake(uint32_t *word, int count) {
    long rc = syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, count, NULL, NULL, 0);
    return rc < 0 ? 0 : (int)rc;
}

// Cached per thread: lock owners ask for it on every acquire and release. The thread that
// forks is the child's only thread and gets a new id, so fork clears its cache.
static __thread int64_t cached_tid = 0;

static void colony_forget_tid(void) { cached_tid = 0; }

__attribute__((constructor)) static void colony_register_fork_handler(void) {
    pthread_atfork(NULL, NULL, colony_forget_tid);
}

int64_t colony_gettid(void) {
    if (cached_tid == 0) cached_tid = (int64_t)syscall(SYS_gettid);
    return cached_tid;
}

uint64_t colony_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void colony_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static unsigned long main_thread_ident;

__attribute__((constructor)) static void colony_record_main_thread(void) {
    main_thread_ident = (unsigned long)pthread_self();
}

unsigned long colony_main_thread_ident(void) { return main_thread_ident; }

void *colony_mremap(void *address, size_t old_size, size_t new_size) {
    return mremap(address, old_size, new_size, MREMAP_MAYMOVE);
}

int colony_pipe_cloexec(int ends[2]) {
    return pipe2(ends, O_CLOEXEC);
}

int colony_pidfd_open(int pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int colony_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0, 0, 0);
}

int colony_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC);
}

int colony_robust_mutex_init(void *mutex, int recursive) {
    pthread_mutexattr_t attributes;
    int rc = pthread_mutexattr_init(&attributes);
    if (rc != 0) return rc;
    pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_settype(&attributes, recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
    rc = pthread_mutex_init((pthread_mutex_t *)mutex, &attributes);
    pthread_mutexattr_destroy(&attributes);
    return rc;
}

static struct timespec colony_timespec(uint64_t ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    return ts;
}

int colony_mutex_lock_until(void *mutex, uint64_t deadline_ns, int try_only) {
    pthread_mutex_t *m = (pthread_mutex_t *)mutex;
    if (try_only) return pthread_mutex_trylock(m);
    if (deadline_ns == 0) return pthread_mutex_lock(m);
    struct timespec ts = colony_timespec(deadline_ns);
    return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
}

int colony_futex_wait_shared(uint32_t *word, uint32_t expected, uint64_t deadline_ns) {
    struct timespec ts;
    struct timespec *timeout = NULL;
    if (deadline_ns != 0) {
        ts = colony_timespec(deadline_ns);
        timeout = &ts;
    }
    long rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, timeout, NULL, FUTEX_BITSET_MATCH_ANY);
    return rc == 0 ? 0 : errno;
}

int colony_futex_wake_shared(uint32_t *word, int count) {
    long rc = syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
    return rc < 0 ? 0 : (int)rc;
}

int colony_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int colony_epoll_watch_readable(int epfd, int fd) {
    struct epoll_event event = {.events = EPOLLIN, .data = {.fd = fd}};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
}

int colony_epoll_ready_now(int epfd) {
    struct epoll_event event;
    return epoll_wait(epfd, &event, 1, 0);
}

int colony_cpus_in_affinity(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
    return CPU_COUNT(&set);
}

int64_t colony_thread_cpu_wait_ns(void) {
    // "time on CPU, time waiting on a run queue, time slices", in nanoseconds.
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char text[128];
    ssize_t count = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (count <= 0) return -1;
    text[count] = 0;
    unsigned long long running = 0, waiting = 0;
    if (sscanf(text, "%llu %llu", &running, &waiting) != 2) return -1;
    return (int64_t)waiting;
}

size_t colony_heap_bytes_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;  // small chunks in use, and large ones mapped on their own
}

void colony_keep_freed_memory(void) {
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
}
