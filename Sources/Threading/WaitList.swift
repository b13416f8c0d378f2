import CMemoryMapShim

/// One blocked thread: it parks on its own futex word until another thread unparks it.
@usableFromInline
final class Waiter: @unchecked Sendable {
    private static let waiting: UInt32 = 0
    private static let woken: UInt32 = 1
    private static let sleeping: UInt32 = 2

    // Must stay the first stored property: `word` addresses it.
    private var wordStorage = UInt32.AtomicRepresentation(Waiter.waiting)
    private var word: FutexWord { FutexWord(storedIn: self) }

    @usableFromInline init() {}

    /// Blocks until `unpark()` or the deadline. Returns true when unparked.
    func park(until deadline: Deadline) -> Bool {
        if word.spin(whileEqualTo: Waiter.waiting) { return true }
        // Tell the waker it has to make a system call to reach us.
        if !word.atomic.compareExchange(
            expected: Waiter.waiting, desired: Waiter.sleeping, ordering: .acquiringAndReleasing
        ).exchanged {
            return true
        }
        while word.load() == Waiter.sleeping {
            if !word.sleep(whileEqualTo: Waiter.sleeping, until: deadline) {
                return word.load() == Waiter.woken
            }
        }
        return true
    }

    func unpark() {
        if word.atomic.exchange(Waiter.woken, ordering: .releasing) == Waiter.sleeping {
            word.wake(1)
        }
    }
}

extension Waiter {
    /// With `lock` held and this waiter already queued where a signaller will find it:
    /// releases `lock`, parks until unparked or the deadline, then re-acquires `lock`.
    /// On a timeout, `withdraw` must take the waiter off its queue and say whether it was
    /// still there; if a signaller got to it first, the signal wins and this returns true.
    func block(releasing lock: Lock, until deadline: Deadline, withdraw: () -> Bool) -> Bool {
        try? lock.release()  // the caller holds it
        let signalled = park(until: deadline)
        lock.acquire()
        return signalled || !withdraw()
    }
}

/// A first-come first-served queue of blocked threads. A plain value: keep it where the
/// owning monitor's `Lock` guards it, and touch it only with that lock held.
@usableFromInline
struct WaiterQueue {
    @usableFromInline var waiters: [Waiter] = []
    @usableFromInline var head = 0

    @usableFromInline init() {}

    @inlinable var isEmpty: Bool { head == waiters.count }

    var count: Int { waiters.count - head }

    mutating func append(_ waiter: Waiter) { waiters.append(waiter) }

    mutating func popFirst() -> Waiter? {
        guard head < waiters.count else { return nil }
        let waiter = waiters[head]
        head += 1
        if head == waiters.count {
            waiters.removeAll(keepingCapacity: true)
            head = 0
        }
        return waiter
    }

    /// Removes a waiter that gave up; false when a signaller already took it off.
    mutating func remove(_ waiter: Waiter) -> Bool {
        guard let index = waiters[head...].firstIndex(where: { $0 === waiter }) else { return false }
        waiters.remove(at: index)
        return true
    }

    /// Wakes the longest-waiting thread, if any. Returns whether one was woken.
    @discardableResult
    mutating func signal() -> Bool {
        guard let waiter = popFirst() else { return false }
        waiter.unpark()
        return true
    }

    @usableFromInline
    mutating func broadcast() {
        while let waiter = popFirst() { waiter.unpark() }
    }
}

/// The threads blocked on one condition of a monitor, as an object a monitor can keep in a
/// `let`. Every method must be called with the owning monitor's `Lock` held.
@usableFromInline
final class WaitList: @unchecked Sendable {
    @usableFromInline var queue = WaiterQueue()

    @usableFromInline init() {}

    @inlinable var isEmpty: Bool { queue.isEmpty }

    /// Releases `lock`, blocks until signalled or the deadline passes, then re-acquires
    /// `lock`. Returns true when signalled; a signal that races with the timeout is never
    /// lost.
    @usableFromInline
    func wait(releasing lock: Lock, until deadline: Deadline) -> Bool {
        let waiter = Waiter()
        queue.append(waiter)
        return waiter.block(releasing: lock, until: deadline) { queue.remove(waiter) }
    }

    /// Wakes the longest-waiting thread, if any. Returns whether one was woken.
    @usableFromInline @discardableResult
    func signal() -> Bool { queue.signal() }

    /// Wakes up to `n` threads.
    func signal(_ n: Int) {
        var left = n
        while left > 0, queue.signal() { left -= 1 }
    }

    @usableFromInline
    func broadcast() { queue.broadcast() }
}
