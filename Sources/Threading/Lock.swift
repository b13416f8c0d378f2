import Atomics
import CMemoryMapShim

/// What every lock offers, local or remote: Python's lock protocol (`acquire`, `release`,
/// `with lock:`). `Condition` wraps any `Locking` value, so a local Condition works over a
/// `Lock`, an `RLock`, or a lock that lives in another process or on a manager.
///
/// `acquire` and `release` may throw because a remote lock can lose its connection; the
/// local locks never throw from `acquire`.
public protocol Locking: AnyObject, Sendable {
    /// Python `L.acquire(blocking=True, timeout=-1)`. Returns true when the lock was taken.
    /// `timeout: nil` waits forever; a timeout is ignored when `blocking` is false.
    func acquire(blocking: Bool, timeout: Double?) throws -> Bool

    /// Python `L.release()`.
    func release() throws

    /// Gives the lock up completely for a `Condition.wait`, returning what
    /// `restoreAfterWait` needs to take it back (an RLock's recursion depth).
    func releaseForWait() throws -> Int

    /// Takes the lock back after a `Condition.wait`, as `releaseForWait` left it.
    func restoreAfterWait(_ saved: Int) throws

    /// Whether the calling thread holds the lock, as far as the lock can tell.
    /// A plain `Lock` has no owner, so it answers "is it locked at all".
    func isOwnedByCurrentThread() throws -> Bool
}

extension Locking {
    public func releaseForWait() throws -> Int {
        try release()
        return 1
    }

    public func restoreAfterWait(_ saved: Int) throws {
        _ = try acquire(blocking: true, timeout: nil)
    }

    public func isOwnedByCurrentThread() throws -> Bool {
        if try acquire(blocking: false, timeout: nil) {
            try release()
            return false
        }
        return true
    }

    /// Python `with L:` — holds the lock for the duration of `body`.
    public func withLock<Result>(_ body: () throws -> Result) throws -> Result {
        _ = try acquire(blocking: true, timeout: nil)
        defer { try? release() }
        return try body()
    }
}

/// A primitive lock (Python `threading.Lock`): not reentrant, and any thread may release it.
///
/// Uncontended acquire and release are one atomic instruction each; a contended acquire
/// spins briefly, then sleeps on a futex.
public final class Lock: Locking, @unchecked Sendable, CustomStringConvertible {
    // 0: unlocked, 1: locked, 2: locked and somebody may be sleeping on it.
    // Must stay the first stored property: `word` addresses it.
    private var wordStorage = UInt32.AtomicRepresentation(0)
    private var word: FutexWord { FutexWord(storedIn: self) }

    public init() {}

    /// Python `L.acquire()`: waits until the lock is taken; always true.
    @discardableResult
    public func acquire() -> Bool { acquire(blocking: true) }

    /// Python `L.acquire(blocking)`: with `blocking: false` it only tries.
    @discardableResult
    public func acquire(blocking: Bool) -> Bool {
        if word.atomic.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            return true
        }
        guard blocking else { return false }
        return acquireContended(.never)
    }

    /// Python `L.acquire(blocking=True, timeout=-1)`: true when the lock was taken within
    /// `timeout` seconds (nil or -1: forever; 0: just try once). As in Python, a timeout
    /// with `blocking: false` or a negative one is `invalidArgument` (ValueError), and one
    /// above `Thread.timeoutMax` is `overflow` (OverflowError).
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double?) throws(ThreadingError) -> Bool {
        guard let seconds = try checkedTimeout(blocking: blocking, timeout) else { return acquire(blocking: blocking) }
        if word.atomic.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            return true
        }
        return acquireContended(Deadline(timeout: seconds))
    }

    private func acquireContended(_ deadline: Deadline) -> Bool {
        // Spin while the holder is likely to let go soon.
        for _ in 0..<spinIterations {
            let state = word.atomic.load(ordering: .relaxed)
            if state == 0,
                word.atomic.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
            {
                return true
            }
            if state == 2 { break }  // others are already sleeping: join them
            colony_cpu_relax()
        }
        while word.atomic.exchange(2, ordering: .acquiring) != 0 {
            if !word.sleep(whileEqualTo: 2, until: deadline) { return false }
        }
        return true
    }

    /// Python `L.release()`. Any thread may release a `Lock`; releasing one that is not
    /// locked throws `ThreadingError.releaseUnlocked`.
    public func release() throws {
        let previous = word.atomic.exchange(0, ordering: .releasing)
        if previous == 2 {
            word.wake(1)
        } else if previous == 0 {
            throw ThreadingError(.releaseUnlocked, "release() of a Lock that is not locked")
        }
    }

    /// Python `L.locked()`.
    public var isLocked: Bool { word.load() != 0 }

    /// Python `with L:`. Throws only what `body` throws.
    public func withLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        acquire()
        defer { try? release() }  // only fails if another thread released it meanwhile
        return try body()
    }

    public var description: String { "<\(isLocked ? "locked" : "unlocked") Lock>" }
}

/// A reentrant lock (Python `threading.RLock`): the owning thread may acquire it again,
/// and must release it as many times; only the owner may release it.
public final class RLock: Locking, @unchecked Sendable, CustomStringConvertible {
    private let lock = Lock()
    private let ownerWord = UnsafeAtomic<UInt>.create(0)
    // Touched only by the owner while it holds `lock`.
    private let depth = UnsafeMutablePointer<Int>.allocate(capacity: 1)

    public init() { depth.initialize(to: 0) }

    deinit {
        _ = ownerWord.destroy()
        depth.deallocate()
    }

    /// Python `r.acquire()`: waits until the calling thread holds the lock (once more).
    @discardableResult
    public func acquire() -> Bool { acquire(blocking: true) }

    /// Python `r.acquire(blocking)`.
    @discardableResult
    public func acquire(blocking: Bool) -> Bool {
        take { lock.acquire(blocking: blocking) }
    }

    /// Python `r.acquire(blocking=True, timeout=-1)`, with `Lock`'s checks of the timeout.
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double?) throws(ThreadingError) -> Bool {
        let seconds = try checkedTimeout(blocking: blocking, timeout)
        return take { seconds.map { (try? lock.acquire(timeout: $0)) ?? false } ?? lock.acquire(blocking: blocking) }
    }

    private func take(_ acquireLock: () -> Bool) -> Bool {
        let me = currentThreadIdent()
        if ownerWord.load(ordering: .relaxed) == me {
            depth.pointee += 1
            return true
        }
        guard acquireLock() else { return false }
        ownerWord.store(me, ordering: .relaxed)
        depth.pointee = 1
        return true
    }

    /// Python `r.release()`: throws `ThreadingError.notOwner` unless the calling thread
    /// owns the lock (this includes releasing an unlocked RLock).
    public func release() throws {
        guard ownerWord.load(ordering: .relaxed) == currentThreadIdent() else {
            throw ThreadingError(.notOwner, "release() of an RLock by a thread that does not own it")
        }
        depth.pointee -= 1
        if depth.pointee == 0 {
            ownerWord.store(0, ordering: .relaxed)
            try lock.release()
        }
    }

    /// Whether any thread holds the lock (Python 3.14 `RLock.locked()`).
    public var isLocked: Bool { lock.isLocked }

    /// The `ident` of the owning thread, or nil when unlocked.
    public var owner: UInt? {
        let value = ownerWord.load(ordering: .relaxed)
        return value == 0 ? nil : value
    }

    /// How many times the calling thread holds the lock (0 when it does not own it).
    public var recursionDepth: Int {
        ownerWord.load(ordering: .relaxed) == currentThreadIdent() ? depth.pointee : 0
    }

    public func releaseForWait() throws -> Int {
        guard ownerWord.load(ordering: .relaxed) == currentThreadIdent() else {
            throw ThreadingError(.notOwner, "a Condition wait needs the calling thread to own its RLock")
        }
        let saved = depth.pointee
        depth.pointee = 0
        ownerWord.store(0, ordering: .relaxed)
        try lock.release()
        return saved
    }

    public func restoreAfterWait(_ saved: Int) throws {
        lock.acquire()
        ownerWord.store(currentThreadIdent(), ordering: .relaxed)
        depth.pointee = saved
    }

    public func isOwnedByCurrentThread() -> Bool {
        ownerWord.load(ordering: .relaxed) == currentThreadIdent()
    }

    /// Python `with r:`. Throws only what `body` throws; the calling thread owns the lock
    /// inside `body`.
    public func withLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        acquire()
        defer { try? release() }  // cannot fail: the calling thread owns it
        return try body()
    }

    public var description: String {
        let owner = self.owner
        return "<\(owner == nil ? "unlocked" : "locked") RLock owner=\(owner ?? 0) count=\(recursionDepth)>"
    }
}

/// Python's checks on the arguments of a lock's or semaphore's `acquire`: the timeout to
/// wait, or nil to wait forever (nil or -1) or not at all (not blocking).
func checkedTimeout(blocking: Bool, _ timeout: Double?) throws(ThreadingError) -> Double? {
    guard let timeout, timeout != -1 else { return nil }
    guard blocking else {
        throw ThreadingError(.invalidArgument, "can't specify a timeout for a non-blocking acquire; pass blocking: false or a timeout, not both")
    }
    guard timeout >= 0 else {
        throw ThreadingError(.invalidArgument, "timeout must be a non-negative number of seconds, or nil (or -1) to wait forever, not \(timeout)")
    }
    guard timeout <= Thread.timeoutMax else {
        throw ThreadingError(.overflow, "timeout \(timeout) s is too large: Thread.timeoutMax is \(Int(Thread.timeoutMax)) s (pass nil to wait forever)")
    }
    return timeout
}
