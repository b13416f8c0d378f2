import CMemoryMapShim

/// One blocked thread: it parks on its own futex word until another thread unparks it.
final class Waiter: @unchecked Sendable {
    private static let waiting: UInt32 = 0
    private static let woken: UInt32 = 1
    private static let sleeping: UInt32 = 2

    private let word = FutexWord.allocate(Waiter.waiting)

    deinit { word.deallocate() }

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

/// The threads blocked on one condition of a monitor, woken first-come first-served.
/// Every method must be called with the owning monitor's `Lock` held.
final class WaitList: @unchecked Sendable {
    private var waiters: [Waiter] = []
    private var head = 0

    var isEmpty: Bool { head == waiters.count }
    var count: Int { waiters.count - head }

    /// Releases `lock`, blocks until signalled or the deadline passes, then re-acquires
    /// `lock`. Returns true when signalled. A signal that races with the timeout is never
    /// lost: the waiter counts as signalled.
    func wait(releasing lock: Lock, until deadline: Deadline) -> Bool {
        let waiter = Waiter()
        waiters.append(waiter)
        try? lock.release()  // the caller holds it
        let signalled = waiter.park(until: deadline)
        lock.acquire()
        if signalled { return true }
        return !remove(waiter)
    }

    /// Wakes the longest-waiting thread, if any. Returns whether one was woken.
    @discardableResult
    func signal() -> Bool {
        guard let waiter = popFirst() else { return false }
        waiter.unpark()
        return true
    }

    /// Wakes up to `n` threads.
    func signal(_ n: Int) {
        var left = n
        while left > 0, signal() { left -= 1 }
    }

    func broadcast() {
        while let waiter = popFirst() { waiter.unpark() }
    }

    private func popFirst() -> Waiter? {
        guard head < waiters.count else { return nil }
        let waiter = waiters[head]
        head += 1
        if head == waiters.count {
            waiters.removeAll(keepingCapacity: true)
            head = 0
        }
        return waiter
    }

    /// Removes a waiter that gave up; false when a signaller already took it off the list.
    private func remove(_ waiter: Waiter) -> Bool {
        guard let index = waiters[head...].firstIndex(where: { $0 === waiter }) else { return false }
        waiters.remove(at: index)
        return true
    }
}
