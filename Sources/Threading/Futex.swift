import Atomics
import CMemoryMapShim
import Glibc

/// A point on the monotonic clock by which a wait gives up; `.never` waits forever.
///
/// Built from a Python-style timeout in seconds: `nil` blocks, a negative or NaN value means
/// "do not wait at all", and anything beyond `Thread.timeoutMax` is treated as forever.
@usableFromInline
struct Deadline: Sendable {
    /// Absolute CLOCK_MONOTONIC nanoseconds; 0 means no deadline.
    @usableFromInline let nanoseconds: UInt64

    static let never = Deadline(nanoseconds: 0)

    private init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    @usableFromInline
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

    @inlinable
    var hasPassed: Bool { nanoseconds != 0 && colony_monotonic_ns() >= nanoseconds }

    /// Seconds left (never negative), or nil for no deadline.
    var remainingSeconds: Double? {
        guard nanoseconds != 0 else { return nil }
        let now = colony_monotonic_ns()
        return now >= nanoseconds ? 0 : Double(nanoseconds - now) / 1e9
    }
}

/// A 32-bit word at a stable heap address that threads can both update atomically and
/// sleep on with futex(2). It lives inside the object that owns it (`storedIn`).
struct FutexWord: @unchecked Sendable {
    let address: UnsafeMutablePointer<UInt32>
    let atomic: UnsafeAtomic<UInt32>

    /// The word stored as the first stored property of `object`, which must be an instance
    /// of a root class whose first stored property is a `UInt32.AtomicRepresentation`
    /// (the technique swift-atomics' `ManagedAtomic` uses). One allocation fewer per object.
    @inline(__always)
    init(storedIn object: AnyObject) {
        let raw = _getUnsafePointerToStoredProperties(object)
        address = raw.assumingMemoryBound(to: UInt32.self)
        atomic = UnsafeAtomic(at: raw.assumingMemoryBound(to: UInt32.AtomicRepresentation.self))
    }

    @inline(__always) func load() -> UInt32 { atomic.load(ordering: .acquiring) }

    /// Sleeps while the word holds `expected`. Returns false only when the deadline passed;
    /// true for a wake-up, a changed word or an interruption (callers re-check their state).
    @discardableResult
    func sleep(whileEqualTo expected: UInt32, until deadline: Deadline) -> Bool {
        if deadline.hasPassed { return false }
        return colony_futex_wait(address, expected, deadline.nanoseconds) != ETIMEDOUT
    }

    /// Spins briefly while the word holds `expected` (see `SpinPolicy`); returns true once
    /// it changed.
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

/// How Colony's blocking primitives wait: a thread about to block first spins for
/// `rounds` rounds of the CPU's pause hint while re-checking its condition, and only then
/// sleeps in the kernel.
///
/// Why: on this project's 2-core machines a pause round takes about 27 ns and waking a
/// thread that sleeps in futex(2) about 20 µs, so a hand-off that arrives during the spin is
/// about a hundred times faster. Spinning about as long as a wake-up costs (750 rounds,
/// roughly 20 µs) never costs more than twice the best choice made with hindsight: the
/// classic competitive bound. The price is that much CPU when nothing arrives. Set the
/// environment variable `COLONY_SPIN_ROUNDS` (read once, at first use) to change it, for
/// example to 0 on a machine with far more busy threads than cores.
public enum SpinPolicy {
    public static let rounds: Int = {
        if let text = getenv("COLONY_SPIN_ROUNDS"), let value = Int(String(cString: text)), value >= 0 {
            return value
        }
        return 750
    }()
}

let spinIterations = SpinPolicy.rounds

/// The calling thread's pthread identity, as Python's `threading.get_ident()`.
@inline(__always) func currentThreadIdent() -> UInt { UInt(pthread_self()) }
