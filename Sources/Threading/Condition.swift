import CMemoryMapShim

/// A condition variable over any lock (Python `threading.Condition`).
///
/// Threads that hold `lock` may `wait` until another thread holding `lock` calls `notify`.
/// The lock can be a `Lock`, an `RLock` (the default, as in Python) or any other `Locking`
/// value, including a lock held in another process. Waiters are woken in arrival order.
public final class Condition: Locking, @unchecked Sendable, CustomStringConvertible {
    /// The wrapped lock (Python's `L`).
    public let lock: any Locking
    // Guards `waiters`; the user's lock cannot, because it may be remote or misused.
    private let guardLock = Lock()
    private var waiters = WaiterQueue()

    /// Python `Condition(lock)`.
    public init(lock: any Locking) { self.lock = lock }

    /// Python `Condition()`: wraps a new `RLock`.
    public convenience init() { self.init(lock: RLock()) }

    /// As Python's repr: the lock, then how many threads wait (`<Condition(<unlocked Lock>, 0)>`).
    public var description: String { "<Condition(\(lock), \(guardLock.withLock { waiters.count }))>" }

    /// Python `c.acquire(blocking=True, timeout=-1)`: acquires the wrapped lock.
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) throws -> Bool {
        try lock.acquire(blocking: blocking, timeout: timeout)
    }

    /// Python `c.release()`: releases the wrapped lock.
    public func release() throws { try lock.release() }

    public func releaseForWait() throws -> Int { try lock.releaseForWait() }
    public func restoreAfterWait(_ saved: Int) throws { try lock.restoreAfterWait(saved) }
    public func isOwnedByCurrentThread() throws -> Bool { try lock.isOwnedByCurrentThread() }

    /// Python `c.wait(timeout=None)`: releases the lock, blocks until notified or until
    /// `timeout` seconds pass, then re-acquires the lock. Returns false on timeout.
    /// Throws `ThreadingError.notOwner` when the calling thread does not hold the lock.
    @discardableResult
    public func wait(timeout: Double? = nil) throws -> Bool {
        try requireOwnership("wait")
        let deadline = Deadline(timeout: timeout)
        let waiter = Waiter()
        guardLock.withLock { waiters.append(waiter) }
        let saved: Int
        do {
            saved = try lock.releaseForWait()
        } catch {
            _ = removeWaiter(waiter)
            throw error
        }
        var notified = waiter.park(until: deadline)
        if !notified {
            // A notify that raced with the timeout already took us off the list: honour it.
            notified = !removeWaiter(waiter)
        }
        try lock.restoreAfterWait(saved)
        return notified
    }

    /// Python `c.wait_for(predicate, timeout=None)`: waits until `predicate` is true,
    /// re-checking after each notification. Returns the predicate's last value.
    @discardableResult
    public func wait(for predicate: () throws -> Bool, timeout: Double? = nil) throws -> Bool {
        let deadline = Deadline(timeout: timeout)
        var result = try predicate()
        while !result {
            guard let remaining = deadline.remainingSeconds else {
                try wait()
                result = try predicate()
                continue
            }
            if remaining <= 0 { break }
            try wait(timeout: remaining)
            result = try predicate()
        }
        return result
    }

    /// Python `c.notify(n=1)`: wakes up to `n` waiting threads. The caller must hold the lock.
    public func notify(_ n: Int = 1) throws {
        try requireOwnership("notify")
        let woken: [Waiter] = guardLock.withLock {
            var taken: [Waiter] = []
            while taken.count < n, let waiter = waiters.popFirst() { taken.append(waiter) }
            return taken
        }
        for waiter in woken { waiter.unpark() }
    }

    /// Python `c.notify_all()`: wakes every waiting thread. The caller must hold the lock.
    public func notifyAll() throws {
        try requireOwnership("notifyAll")
        let woken: [Waiter] = guardLock.withLock {
            var taken: [Waiter] = []
            while let waiter = waiters.popFirst() { taken.append(waiter) }
            return taken
        }
        for waiter in woken { waiter.unpark() }
    }

    /// Python `with c:`.
    public func withLock<Result>(_ body: () throws -> Result) throws -> Result {
        try lock.withLock(body)
    }

    private func requireOwnership(_ operation: String) throws {
        guard try lock.isOwnedByCurrentThread() else {
            throw ThreadingError(.notOwner, "Condition.\(operation)() needs the calling thread to hold the condition's lock")
        }
    }

    private func removeWaiter(_ waiter: Waiter) -> Bool {
        guardLock.withLock { waiters.remove(waiter) }
    }
}

/// A flag threads can wait on (Python `threading.Event`). Initially false.
public final class Event: @unchecked Sendable, CustomStringConvertible {
    // Bit 0: the flag. Bit 1: some thread may be asleep in the kernel, so set() must make
    // a system call. Bits 2...: a generation that set() bumps, so a waiter that slept through
    // a set() followed by a clear() still returns true, as in Python.
    // Must stay the first stored property: `word` addresses it.
    private var wordStorage = UInt32.AtomicRepresentation(0)
    private var word: FutexWord { FutexWord(storedIn: self) }
    private static let flag: UInt32 = 1
    private static let sleepers: UInt32 = 2

    public init() {}

    /// Python `e.is_set()`.
    public var isSet: Bool { word.load() & Event.flag != 0 }

    /// As Python's repr: `<Event at 0x…: set>` or `unset`.
    public var description: String { "<Event at \(address(of: self)): \(isSet ? "set" : "unset")>" }

    /// Python `e.set()`: sets the flag and wakes every waiting thread.
    public func set() {
        var current = word.atomic.load(ordering: .relaxed)
        while current & Event.flag == 0 {
            let next = ((current >> 2) &+ 1) << 2 | Event.flag
            let (exchanged, original) = word.atomic.compareExchange(
                expected: current, desired: next, ordering: .acquiringAndReleasing)
            if exchanged {
                if current & Event.sleepers != 0 { word.wakeAll() }
                return
            }
            current = original
        }
    }

    /// Python `e.clear()`.
    public func clear() {
        _ = word.atomic.loadThenBitwiseAnd(with: ~Event.flag, ordering: .acquiringAndReleasing)
    }

    /// Python `e.wait(timeout=None)`: returns true once the flag is set, false if `timeout`
    /// seconds pass first. Spins briefly before sleeping (see `FutexWord.spin`).
    @discardableResult
    public func wait(timeout: Double? = nil) -> Bool {
        let start = word.load()
        if start & Event.flag != 0 { return true }
        let generation = start >> 2
        func fired(_ value: UInt32) -> Bool { value & Event.flag != 0 || value >> 2 != generation }

        let deadline = Deadline(timeout: timeout)
        if deadline.hasPassed { return false }
        for _ in 0..<spinIterations {
            if fired(word.atomic.load(ordering: .relaxed)) { return fired(word.load()) }
            colony_cpu_relax()
        }
        while true {
            var current = word.load()
            if fired(current) { return true }
            if current & Event.sleepers == 0 {
                let marked = current | Event.sleepers
                guard word.atomic.compareExchange(
                    expected: current, desired: marked, ordering: .acquiringAndReleasing
                ).exchanged else { continue }
                current = marked
            }
            if !word.sleep(whileEqualTo: current, until: deadline) {
                return fired(word.load())
            }
        }
    }
}

/// A counting semaphore (Python `threading.Semaphore`).
public class Semaphore: @unchecked Sendable, CustomStringConvertible {
    fileprivate let lock = Lock()
    fileprivate var value: Int
    private let waiting = WaitList()

    /// Python `Semaphore(value=1)`. A negative value throws `ThreadingError.invalidArgument`.
    public init(_ value: Int = 1) throws {
        guard value >= 0 else {
            throw ThreadingError(.invalidArgument, "a semaphore's initial value must be >= 0, got \(value)")
        }
        self.value = value
    }

    /// Python `s.acquire()`: takes one permit, waiting for one; always true.
    @discardableResult
    public func acquire() -> Bool { acquire(blocking: true) }

    /// Python `s.acquire(blocking)`: with `blocking: false` takes a permit only if one is free.
    @discardableResult
    public func acquire(blocking: Bool) -> Bool { take(until: blocking ? .never : Deadline(timeout: 0)) }

    /// Python `s.acquire(blocking=True, timeout=None)`: false when no permit could be had
    /// within `timeout` seconds; the timeout is checked as `Lock.acquire` checks it.
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double?) throws(ThreadingError) -> Bool {
        guard let seconds = try checkedTimeout(blocking: blocking, timeout) else { return acquire(blocking: blocking) }
        return take(until: Deadline(timeout: seconds))
    }

    private func take(until deadline: Deadline) -> Bool {
        lock.acquire()
        defer { try? lock.release() }
        while value == 0 {
            if deadline.hasPassed || !waiting.wait(releasing: lock, until: deadline) {
                if value == 0 { return false }
            }
        }
        value -= 1
        return true
    }

    /// Python `s.release(n=1)`: returns `n` permits and wakes up to `n` waiters.
    public func release(_ n: Int = 1) throws {
        guard n >= 1 else {
            throw ThreadingError(.invalidArgument, "release(n) needs n >= 1, got \(n)")
        }
        try lock.withLock {
            try checkRelease(n)
            value += n
            waiting.signal(n)
        }
    }

    /// The number of permits currently available (Python's private `_value`).
    public var available: Int { lock.withLock { value } }

    /// As Python's repr: `<Semaphore at 0x…: value=1>`; a bounded one also shows its
    /// initial value (`value=1/2`).
    public var description: String {
        let bound = (self as? BoundedSemaphore).map { "/\($0.initialValue)" } ?? ""
        return "<\(self is BoundedSemaphore ? "BoundedSemaphore" : "Semaphore") at \(address(of: self)): value=\(available)\(bound)>"
    }

    fileprivate func checkRelease(_ n: Int) throws {}

    /// Python `with s:`: holds one permit for the duration of `body`.
    public func withPermit<Result>(_ body: () throws -> Result) rethrows -> Result {
        acquire()
        defer { try? release() }
        return try body()
    }
}

/// A semaphore that refuses to be released above its initial value
/// (Python `threading.BoundedSemaphore`).
public final class BoundedSemaphore: Semaphore, @unchecked Sendable {
    /// The initial value, which `release` may not exceed.
    public let initialValue: Int

    /// Python `BoundedSemaphore(value=1)`.
    public override init(_ value: Int = 1) throws {
        initialValue = value
        try super.init(value)
    }

    fileprivate override func checkRelease(_ n: Int) throws {
        if value + n > initialValue {
            throw ThreadingError(
                .boundedSemaphoreOverReleased,
                "BoundedSemaphore released too many times: \(value) + \(n) would exceed its initial value \(initialValue)")
        }
    }
}

/// An object's address as Python's reprs show it (`0x7f…`).
func address(of object: AnyObject) -> String {
    "0x" + String(UInt(bitPattern: Unmanaged.passUnretained(object).toOpaque()), radix: 16)
}
