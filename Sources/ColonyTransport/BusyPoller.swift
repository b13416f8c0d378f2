import Atomics
import CMemoryMapShim
import Glibc
import NIOConcurrencyHelpers
import NIOCore

/// Busy polling: after an event-loop thread has sent requests (client) or answers (manager),
/// it keeps polling its connections for a short while instead of going to sleep in epoll.
///
/// Why: where idle CPUs halt (most virtual machines), waking a sleeping thread costs more than
/// the loopback round trip itself, and a request pays that wake on both ends. A thread that is
/// still polling when the reply lands needs no wake. Linux makes the same trade inside the
/// kernel (`SO_BUSY_POLL`), but only for network cards with NAPI, never for loopback.
///
/// The price is CPU: up to one `budget` after each burst of work. A poller that keeps running
/// out its budget backs off (`BusyPollBackoff`), so waiting for a slow peer or a remote manager
/// costs little.
///
/// It does not poll where it would take a CPU from other work: in a process limited to one
/// CPU, nor while its thread keeps waiting for a CPU (`CPUContention`).
///
/// One poller serves one event loop. It watches every Colony connection of that loop (and a
/// worker node's pipes from its worker processes) in an epoll set of its own and stops as
/// soon as one of them is readable, or as soon as work is handed to the loop through
/// `execute`. Other work on the loop (tasks enqueued without this poller, timers) waits at
/// most one budget.
public final class BusyPoller: @unchecked Sendable {
    public let eventLoop: any EventLoop
    private let epollDescriptor: CInt
    /// Work enqueued on the loop through `execute` that has not started yet.
    private let handedOver = ManagedAtomic<Int>(0)
    private let pollsEndedByWork = ManagedAtomic<UInt64>(0)
    private let pollsTimedOut = ManagedAtomic<UInt64>(0)
    private let chancesSkipped = ManagedAtomic<UInt64>(0)
    private let chancesSkippedWhileCrowded = ManagedAtomic<UInt64>(0)
    // Touched only on the event loop.
    private var watched = 0
    private var pollQueued = false
    private var queuedBudget: UInt64 = 0
    private var backoff = BusyPollBackoff()
    private var contention = CPUContention()

    /// Without an epoll set (creating one failed) the poller watches nothing and never polls.
    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        epollDescriptor = colony_epoll_create()
    }

    deinit { if epollDescriptor >= 0 { close(epollDescriptor) } }

    private struct WeakPoller {
        weak var poller: BusyPoller?
    }

    // A pthread mutex: ThreadSanitizer sees through it (not through the standard library's
    // futex-based `Mutex`, which it reported as a race).
    private static let pollers = NIOLockedValueBox<[ObjectIdentifier: WeakPoller]>([:])

    /// The poller of `eventLoop`, made on first use. Every holder keeps it alive; it closes its
    /// epoll set when the last one lets go.
    public static func shared(by eventLoop: any EventLoop) -> BusyPoller {
        pollers.withLockedValue { pollers in
            let key = ObjectIdentifier(eventLoop)
            // The poller holds its loop, so a live entry cannot belong to another loop that
            // reused the address.
            if let existing = pollers[key]?.poller { return existing }
            pollers = pollers.filter { $0.value.poller != nil }
            let made = BusyPoller(eventLoop: eventLoop)
            pollers[key] = WeakPoller(poller: made)
            return made
        }
    }

    /// On the event loop, once the channel is active: adds its socket to the watched set.
    /// Returns false if the socket cannot be found (the channel is then simply not watched).
    @discardableResult
    public func watch(_ channel: any Channel) -> Bool {
        guard let descriptor = BusyPoller.socketDescriptor(of: channel) else { return false }
        return watch(descriptor: descriptor)
    }

    /// On the event loop: adds a descriptor the caller knows (a socket or pipe the loop's
    /// channel took over) to the watched set; `unwatch` when that channel has gone inactive.
    @discardableResult
    public func watch(descriptor: CInt) -> Bool {
        eventLoop.preconditionInEventLoop()
        guard epollDescriptor >= 0, colony_epoll_watch_readable(epollDescriptor, descriptor) == 0 else { return false }
        watched += 1
        return true
    }

    /// On the event loop, when a watched channel has gone inactive. The kernel has already
    /// dropped its socket from the set when NIO closed it.
    public func unwatch() {
        eventLoop.preconditionInEventLoop()
        watched -= 1
    }

    /// Runs `work` on the event loop; a poll in progress there stops for it.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        handedOver.wrappingIncrement(ordering: .relaxed)
        eventLoop.execute { [self] in
            handedOver.wrappingDecrement(ordering: .relaxed)
            work()
        }
    }

    /// On the event loop: polls for up to `budget` nanoseconds once the tasks queued now have
    /// run, unless the back-off says to skip this time or the CPUs are crowded
    /// (`CPUContention`). Several calls before then make one poll with the largest budget.
    public func pollSoon(budget: UInt64) {
        guard budget > 0, watched > 0, BusyPoller.hasSeveralCPUs else { return }
        guard !pollQueued else {
            queuedBudget = max(queuedBudget, budget)
            return
        }
        guard backoff.shouldPoll() else {
            chancesSkipped.wrappingIncrement(ordering: .relaxed)
            return
        }
        guard !contention.isCallingThreadCrowded() else {
            chancesSkippedWhileCrowded.wrappingIncrement(ordering: .relaxed)
            return
        }
        pollQueued = true
        queuedBudget = budget
        eventLoop.execute { [self] in poll() }
    }

    /// Whether this process may run on more than one CPU (its affinity and its cgroup's quota).
    /// With one, a poll only delays the peer that would send the reply (measured: 28k against
    /// 30k calls/s under `taskset -c 0`), so pollers never poll.
    public static let hasSeveralCPUs = colony_cpus_in_affinity() != 1 && System.coreCount > 1

    /// What the poller has done so far (from any thread).
    public struct Statistics: Sendable, Equatable {
        /// Polls that ended because a watched connection had bytes or work was handed over.
        public var endedByWork: UInt64 = 0
        /// Polls that ran out their budget, after which the thread slept.
        public var timedOut: UInt64 = 0
        /// Chances to poll that the back-off skipped.
        public var skipped: UInt64 = 0
        /// Chances to poll skipped because the loop's thread was waiting for a CPU.
        public var skippedWhileCrowded: UInt64 = 0

        public init() {}
    }

    public var statistics: Statistics {
        var statistics = Statistics()
        statistics.endedByWork = pollsEndedByWork.load(ordering: .relaxed)
        statistics.timedOut = pollsTimedOut.load(ordering: .relaxed)
        statistics.skipped = chancesSkipped.load(ordering: .relaxed)
        statistics.skippedWhileCrowded = chancesSkippedWhileCrowded.load(ordering: .relaxed)
        return statistics
    }

    /// The back-off's state, for tests (on the event loop).
    var backoffState: BusyPollBackoff { backoff }

    private func poll() {
        pollQueued = false
        let budget = queuedBudget
        // Work waiting behind this task: the loop is not idle.
        guard handedOver.load(ordering: .relaxed) == 0 else { return }
        let deadline = colony_monotonic_ns() + budget
        while true {
            if colony_epoll_ready_now(epollDescriptor) > 0 || handedOver.load(ordering: .relaxed) > 0 {
                backoff.record(hit: true)
                pollsEndedByWork.wrappingIncrement(ordering: .relaxed)
                return
            }
            if colony_monotonic_ns() >= deadline {
                backoff.record(hit: false)
                pollsTimedOut.wrappingIncrement(ordering: .relaxed)
                return
            }
            // Lets the peer run first if it shares this CPU.
            sched_yield()
        }
    }

    /// The descriptor of a NIO socket channel. NIO does not expose it, but names it in the
    /// channel's description ("fd=12"); the number is trusted only if that socket's two ends
    /// are the channel's.
    public static func socketDescriptor(of channel: any Channel) -> CInt? {
        let description = String(describing: channel)
        guard let marker = description.firstRange(of: "fd=") else { return nil }
        guard let descriptor = CInt(description[marker.upperBound...].prefix(while: \.isNumber)) else { return nil }
        if case .unixDomainSocket? = channel.localAddress {
            // A Unix socket has no ports: its family must be AF_UNIX and its named end (the
            // manager's socket file) must be the one NIO reports.
            let named = channel.localAddress?.pathname.flatMap { $0.isEmpty ? nil : $0 } ?? channel.remoteAddress?.pathname ?? ""
            guard !named.isEmpty, unixPath(of: descriptor, getsockname) == named || unixPath(of: descriptor, getpeername) == named else {
                return nil
            }
            return descriptor
        }
        guard let local = channel.localAddress?.port, let remote = channel.remoteAddress?.port,
            port(of: descriptor, getsockname) == local, port(of: descriptor, getpeername) == remote
        else { return nil }
        return descriptor
    }

    typealias SocketNameCall = (CInt, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> CInt

    /// One end's address (`getsockname` or `getpeername`), nil if the call fails.
    private static func socketName(of descriptor: CInt, _ name: SocketNameCall) -> sockaddr_storage? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let found = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { name(descriptor, $0, &length) == 0 }
        }
        return found ? storage : nil
    }

    /// The path of a Unix socket's end, nil for another family.
    private static func unixPath(of descriptor: CInt, _ name: SocketNameCall) -> String? {
        guard let storage = socketName(of: descriptor, name), CInt(storage.ss_family) == AF_UNIX else { return nil }
        let address = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_un.self) }
        return withUnsafeBytes(of: address.sun_path) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
    }

    /// The port of a TCP socket's end, nil for another family.
    private static func port(of descriptor: CInt, _ name: SocketNameCall) -> Int? {
        // sin_port and sin6_port sit at the same place, right after the family.
        guard let storage = socketName(of: descriptor, name), [AF_INET, AF_INET6].contains(CInt(storage.ss_family)) else { return nil }
        return withUnsafeBytes(of: storage) { Int(UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self))) }
    }
}

/// When a busy poller polls: always while its polls end in a reply; after a poll that ran out
/// its budget it skips the next 1, then 3, 7 ... up to 63 chances, so a slow or distant peer
/// costs at most one budget in 64 replies.
public struct BusyPollBackoff: Sendable, Equatable {
    public static let maximumMisses = 6
    /// Polls in a row that ran out their budget (capped).
    public private(set) var misses = 0
    /// Chances still to skip before polling again.
    public private(set) var skipping = 0

    public init() {}

    /// Whether to poll at this chance (counts a skipped one).
    public mutating func shouldPoll() -> Bool {
        guard skipping == 0 else {
            skipping -= 1
            return false
        }
        return true
    }

    public mutating func record(hit: Bool) {
        if hit {
            misses = 0
        } else {
            misses = min(misses + 1, BusyPollBackoff.maximumMisses)
            skipping = (1 << misses) - 1
        }
    }
}

/// Nanoseconds the calling thread has spent runnable but waiting for a CPU (nil where the
/// kernel does not say).
func colonyThreadCPUWait() -> UInt64? {
    let waited = colony_thread_cpu_wait_ns()
    return waited < 0 ? nil : UInt64(waited)
}

/// Whether the CPUs are crowded: the event loop's thread spent more than an eighth of the
/// last window runnable but waiting for a CPU. More threads want to run than there are CPUs
/// (say a manager and its clients, each with a loop per core, on one small machine), and a
/// poll would hold a CPU another thread is waiting for. Measured on 2 cores with 4 busy loops:
/// each waited 30–50% of the time and polling took p99 from 1 to 3–4 ms; with 2 loops they
/// waited 2–4%.
public struct CPUContention: Sendable {
    public static let window: UInt64 = 10_000_000
    public static let crowdedShare = 0.125
    public private(set) var isCrowded = false
    private var start: (time: UInt64, waited: UInt64)?

    public init() {}

    /// Whether the CPUs are crowded, as the calling thread has seen them over the last
    /// window (sampled when a window has passed).
    public mutating func isCallingThreadCrowded() -> Bool {
        let now = colony_monotonic_ns()
        if isDue(at: now) { record(at: now, waited: colonyThreadCPUWait()) }
        return isCrowded
    }

    /// Whether a window has passed since the last sample.
    public func isDue(at now: UInt64) -> Bool {
        guard let start else { return true }
        return now &- start.time >= CPUContention.window
    }

    /// Takes a sample: `waited` is the thread's total time waiting for a CPU so far (nil where
    /// the kernel does not say, which counts as never crowded).
    public mutating func record(at now: UInt64, waited: UInt64?) {
        guard let waited else {
            isCrowded = false
            start = nil
            return
        }
        if let start, now > start.time, waited >= start.waited {
            isCrowded = Double(waited - start.waited) > CPUContention.crowdedShare * Double(now - start.time)
        }
        start = (now, waited)
    }
}
