import Atomics
import CMemoryMapShim
import Glibc

/// A point on the monotonic clock by which a wait gives up; `.never` waits forever.
///
/// Built from a Python-style timeout in seconds: `nil` blocks, a negative or NaN value means
/// "do not wait at all", and anything beyond `Thread.timeoutMax` is treated as forever.
struct Deadline: Sendable {
    /// Absolute CLOCK_MONOTONIC nanoseconds; 0 means no deadline.
    let nanoseconds: UInt64

    static let never = Deadline(nanoseconds: 0)

    private init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    init(timeout seconds: Double?) {
        guard let seconds else {
            self = .never
            return
        }
        let now = colony_monotonic_ns()
        if !(seconds > 0) {  // negative, zero or NaN: already passed
            self.nanoseconds = now
        } else if seconds >= Thread.timeoutMax {
            self = .never
        } else {
            self.nanoseconds = now &+ UInt64(seconds * 1e9)
        }
    }

    var isNever: Bool { nanoseconds == 0 }

    var hasPassed: Bool { nanoseconds != 0 && colony_monotonic_ns() >= nanoseconds }

    /// Seconds left (never negative), or nil for no deadline.
    var remainingSeconds: Double? {
        guard nanoseconds != 0 else { return nil }
        let now = colony_monotonic_ns()
        return now >= nanoseconds ? 0 : Double(nanoseconds - now) / 1e9
    }
}

/// A 32-bit word at a stable heap address that threads can both update atomically and
/// sleep on with futex(2). Whoever allocates it must call `deallocate()` exactly once.
struct FutexWord: @unchecked Sendable {
    let address: UnsafeMutablePointer<UInt32>
    let atomic: UnsafeAtomic<UInt32>

    static func allocate(_ initialValue: UInt32) -> FutexWord {
        let storage = UnsafeMutablePointer<UInt32.AtomicRepresentation>.allocate(capacity: 1)
        storage.initialize(to: UInt32.AtomicRepresentation(initialValue))
        return FutexWord(
            address: UnsafeMutableRawPointer(storage).assumingMemoryBound(to: UInt32.self),
            atomic: UnsafeAtomic(at: storage)
        )
    }

    func deallocate() { _ = atomic.destroy() }

    @inline(__always) func load() -> UInt32 { atomic.load(ordering: .acquiring) }

    /// Sleeps while the word holds `expected`. Returns false only when the deadline passed;
    /// true for a wake-up, a changed word or an interruption (callers re-check their state).
    @discardableResult
    func sleep(whileEqualTo expected: UInt32, until deadline: Deadline) -> Bool {
        if deadline.hasPassed { return false }
        return colony_futex_wait(address, expected, deadline.nanoseconds) != ETIMEDOUT
    }

    /// Spins briefly while the word holds `expected`; returns true once it changed.
    ///
    /// Spin policy: a thread about to block first re-reads its word for `spinIterations`
    /// rounds (a few microseconds with the CPU's pause hint). A futex wake-up of a sleeping
    /// thread costs about 20 µs on this kind of VM, so a hand-off that arrives during the
    /// spin is two orders of magnitude faster; one that does not costs only the spin.
    @inline(__always)
    func spin(whileEqualTo expected: UInt32) -> Bool {
        for _ in 0..<spinIterations {
            if atomic.load(ordering: .relaxed) != expected { return true }
            colony_cpu_relax()
        }
        return atomic.load(ordering: .acquiring) != expected
    }

    @discardableResult
    func wake(_ count: Int32 = 1) -> Int32 { colony_futex_wake(address, count) }

    func wakeAll() { colony_futex_wake(address, Int32.max) }
}

/// How many pause-rounds a thread spins before it sleeps in the kernel (see `FutexWord.spin`).
let spinIterations = 2000

/// The calling thread's pthread identity, as Python's `threading.get_ident()`.
@inline(__always) func currentThreadIdent() -> UInt { UInt(pthread_self()) }
