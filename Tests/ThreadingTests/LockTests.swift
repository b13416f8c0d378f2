import Testing
@testable import Threading

@Suite struct LockTests {
    @Test func acquireAndReleaseReportLockedState() throws {
        let lock = Lock()
        #expect(!lock.isLocked)
        #expect(lock.acquire())
        #expect(lock.isLocked)
        #expect(!lock.acquire(blocking: false))
        try lock.release()
        #expect(!lock.isLocked)
    }

    @Test func releasingAnUnlockedLockThrows() {
        let lock = Lock()
        #expect(throws: ThreadingError.self) { try lock.release() }
        do {
            try lock.release()
        } catch let error as ThreadingError {
            #expect(error.code == .releaseUnlocked)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func acquireTimesOutWhileHeldElsewhere() throws {
        let lock = Lock()
        lock.acquire()
        let result = Recorder<Bool>()
        try joinAll([try spawn { result.append((try? lock.acquire(timeout: 0.05)) ?? true) }])
        #expect(result.values == [false])
        // A zero timeout only tries once.
        #expect(try !lock.acquire(timeout: 0))
        try lock.release()
    }

    /// CPython's lock_tests `test_timeout`, for every local lock and semaphore.
    @Test func timeoutsAreCheckedAsPythonChecksThem() throws {
        let acquirers: [(String, (Bool, Double?) throws(ThreadingError) -> Bool, () throws -> Void)] = {
            let lock = Lock()
            let rlock = RLock()
            let semaphore = try! Semaphore(1)
            let bounded = try! BoundedSemaphore(1)
            return [
                ("Lock", { (b, t) throws(ThreadingError) in try lock.acquire(blocking: b, timeout: t) }, { try lock.release() }),
                ("RLock", { (b, t) throws(ThreadingError) in try rlock.acquire(blocking: b, timeout: t) }, { try rlock.release() }),
                ("Semaphore", { (b, t) throws(ThreadingError) in try semaphore.acquire(blocking: b, timeout: t) }, { try semaphore.release() }),
                ("BoundedSemaphore", { (b, t) throws(ThreadingError) in try bounded.acquire(blocking: b, timeout: t) }, { try bounded.release() }),
            ]
        }()
        for (name, acquire, release) in acquirers {
            for (blocking, timeout, expected) in [
                (false, 1.0, ThreadingError.Code.invalidArgument), (false, 0, .invalidArgument), (true, -100, .invalidArgument),
                (true, -.infinity, .invalidArgument), (true, .nan, .invalidArgument), (true, 1e100, .overflow),
                (true, Thread.timeoutMax + 1e6, .overflow),
            ] {
                let refused: ThreadingError.Code?
                do {
                    _ = try acquire(blocking, timeout)
                    refused = nil
                } catch {
                    refused = error.code
                }
                #expect(refused == expected, "\(name) acquire(blocking: \(blocking), timeout: \(timeout))")
            }
            // Accepted: Thread.timeoutMax itself, -1 (forever, as Python's default), and a
            // non-blocking try without a timeout.
            #expect(try acquire(true, Thread.timeoutMax), "\(name)")
            try release()
            #expect(try acquire(true, -1), "\(name)")
            try release()
            #expect(try acquire(false, nil), "\(name)")
            try release()
            #expect(try acquire(false, -1), "\(name)")
            try release()
        }
    }

    @Test func anotherThreadMayReleaseALock() throws {
        let lock = Lock()
        lock.acquire()
        try joinAll([try spawn { try lock.release() }])
        #expect(!lock.isLocked)
    }

    @Test func blockedAcquireWakesWhenReleased() throws {
        let lock = Lock()
        lock.acquire()
        let acquired = Event()
        let thread = try spawn {
            lock.acquire()
            acquired.set()
        }
        #expect(!acquired.wait(timeout: 0.05))
        try lock.release()
        #expect(acquired.wait(timeout: patience))
        try joinAll([thread])
    }

    @Test func mutualExclusionUnderContention() throws {
        let lock = Lock()
        final class Box: @unchecked Sendable { var value = 0 }
        let box = Box()
        let threads = try (0..<8).map { _ in
            try spawn {
                for _ in 0..<20_000 { lock.withLock { box.value += 1 } }
            }
        }
        try joinAll(threads)
        #expect(box.value == 8 * 20_000)
    }

    @Test func withLockReleasesWhenBodyThrows() {
        struct Boom: Error {}
        let lock = Lock()
        #expect(throws: Boom.self) { try lock.withLock { throw Boom() } }
        #expect(!lock.isLocked)
    }
}

@Suite struct RLockTests {
    @Test func ownerMayAcquireRecursively() throws {
        let lock = RLock()
        #expect(lock.owner == nil)
        lock.acquire()
        lock.acquire()
        #expect(lock.recursionDepth == 2)
        #expect(lock.owner == Thread.currentIdent)
        #expect(lock.description.contains("count=2"))
        try lock.release()
        #expect(lock.isLocked)
        try lock.release()
        #expect(!lock.isLocked)
        #expect(lock.owner == nil)
    }

    @Test func nonOwnerCannotReleaseOrEnter() throws {
        let lock = RLock()
        lock.acquire()
        let outcome = Recorder<String>()
        try joinAll([try spawn {
            do {
                try lock.release()
                outcome.append("released")
            } catch let error as ThreadingError {
                outcome.append("\(error.code)")
            }
            outcome.append((try? lock.acquire(timeout: 0.05)) == true ? "acquired" : "timed out")
        }])
        #expect(outcome.values == ["notOwner", "timed out"])
        try lock.release()
    }

    @Test func releasingAnUnownedRLockThrows() {
        #expect(throws: ThreadingError.self) { try RLock().release() }
    }

    @Test func recursiveFunctionAsInTheChapter() throws {
        let lock = RLock()
        final class State: @unchecked Sendable { var items: [Int] = [] }
        let state = State()
        @Sendable func recursive(_ n: Int) {
            lock.withLock {
                state.items.append(n)
                if n > 0 { recursive(n - 1) }
            }
        }
        let threads = try (0..<4).map { _ in try spawn { recursive(50) } }
        try joinAll(threads)
        #expect(state.items.count == 4 * 51)
        #expect(!lock.isLocked)
    }
}

@Suite struct ConditionTests {
    @Test func waitNeedsTheLock() {
        let condition = Condition()
        #expect(throws: ThreadingError.self) { try condition.wait(timeout: 0) }
        #expect(throws: ThreadingError.self) { try condition.notify() }
        #expect(throws: ThreadingError.self) { try condition.notifyAll() }
    }

    @Test func waitTimesOutAndKeepsTheLock() throws {
        for lock in [Lock(), RLock()] as [any Locking] {
            let condition = Condition(lock: lock)
            try condition.acquire()
            #expect(try !condition.wait(timeout: 0.02))
            #expect(try condition.isOwnedByCurrentThread())
            try condition.release()
        }
    }

    @Test func notifyWakesOneWaiterAtATimeInOrder() throws {
        let condition = Condition(lock: Lock())
        let order = Recorder<Int>()
        let ready = Counter()
        var threads: [Thread] = []
        for index in 0..<3 {
            threads.append(try spawn {
                try condition.withLock {
                    ready.add()
                    let notified = try condition.wait(timeout: patience)
                    #expect(notified)
                    order.append(index)
                }
            })
            // Let each thread start waiting before the next, so arrival order is known.
            while ready.value <= index { Thread.sleepBriefly() }
            try condition.withLock {}
        }
        for expected in 1...3 {
            try condition.withLock { try condition.notify() }
            while order.values.count < expected { Thread.sleepBriefly() }
        }
        try joinAll(threads)
        #expect(order.values == [0, 1, 2])
    }

    @Test func notifyAllAndNotifyN() throws {
        let condition = Condition()
        let woken = Counter()
        let waiting = Counter()
        let threads = try (0..<5).map { _ in
            try spawn {
                try condition.withLock {
                    waiting.add()
                    try condition.wait(timeout: patience)
                    woken.add()
                }
            }
        }
        while try condition.withLock({ waiting.value }) < 5 { Thread.sleepBriefly() }
        try condition.withLock { try condition.notify(2) }
        while woken.value < 2 { Thread.sleepBriefly() }
        try condition.withLock { try condition.notifyAll() }
        try joinAll(threads)
        #expect(woken.value == 5)
    }

    @Test func waitForPredicate() throws {
        let condition = Condition()
        final class Flag: @unchecked Sendable { var value = false }
        let flag = Flag()
        let thread = try spawn {
            try condition.withLock {
                flag.value = true
                try condition.notifyAll()
            }
        }
        let result = try condition.withLock { try condition.wait(for: { flag.value }, timeout: patience) }
        #expect(result)
        try joinAll([thread])
        let never = try condition.withLock { try condition.wait(for: { false }, timeout: 0.03) }
        #expect(!never)
    }

    @Test func rlockConditionRestoresRecursionDepth() throws {
        let lock = RLock()
        let condition = Condition(lock: lock)
        lock.acquire()
        lock.acquire()
        let notifier = try spawn {
            // Only possible if wait released both levels.
            try condition.withLock { try condition.notify() }
        }
        #expect(try condition.wait(timeout: patience))
        #expect(lock.recursionDepth == 2)
        try lock.release()
        try lock.release()
        try joinAll([notifier])
    }

    @Test func producerConsumerStress() throws {
        let condition = Condition(lock: Lock())
        final class Buffer: @unchecked Sendable { var items: [Int] = []; var done = false }
        let buffer = Buffer()
        let consumed = Counter()
        let consumers = try (0..<4).map { _ in
            try spawn {
                while true {
                    let item: Int? = try condition.withLock {
                        while buffer.items.isEmpty && !buffer.done { try condition.wait() }
                        return buffer.items.popLast()
                    }
                    guard let item else { return }
                    consumed.add(item)
                }
            }
        }
        for i in 1...10_000 {
            try condition.withLock {
                buffer.items.append(i)
                try condition.notify()
            }
        }
        try condition.withLock {
            buffer.done = true
            try condition.notifyAll()
        }
        try joinAll(consumers)
        #expect(consumed.value == 10_000 * 10_001 / 2)
    }
}

extension Thread {
    /// Yields the CPU for about a millisecond; for test loops that poll a condition.
    static func sleepBriefly() { _ = Event().wait(timeout: 0.001) }
}
