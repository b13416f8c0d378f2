import Testing
@testable import Threading

@Suite struct EventTests {
    @Test func setClearAndIsSet() {
        let event = Event()
        #expect(!event.isSet)
        #expect(!event.wait(timeout: 0.01))
        event.set()
        #expect(event.isSet)
        #expect(event.wait(timeout: 0))
        #expect(event.wait())
        event.set()  // setting twice is harmless
        event.clear()
        #expect(!event.isSet)
        #expect(!event.wait(timeout: 0))
    }

    @Test func setWakesAllWaiters() throws {
        let event = Event()
        let woken = Counter()
        let threads = try (0..<10).map { _ in
            try spawn { if event.wait(timeout: patience) { woken.add() } }
        }
        event.set()
        try joinAll(threads)
        #expect(woken.value == 10)
    }

    @Test func waiterThatSleptThroughSetThenClearStillReturnsTrue() throws {
        let event = Event()
        let results = Recorder<Bool>()
        let started = Event()
        let thread = try spawn {
            started.set()
            results.append(event.wait(timeout: patience))
        }
        started.wait()
        // Give the waiter time to get past its spin and sleep in the kernel.
        _ = Event().wait(timeout: 0.05)
        event.set()
        event.clear()
        try joinAll([thread])
        #expect(results.values == [true])
    }

    @Test func pingPongManyRounds() throws {
        let ping = Event(), pong = Event()
        let rounds = 2_000
        let thread = try spawn {
            for _ in 0..<rounds {
                #expect(ping.wait(timeout: patience))
                ping.clear()
                pong.set()
            }
        }
        for _ in 0..<rounds {
            ping.set()
            #expect(pong.wait(timeout: patience))
            pong.clear()
        }
        try joinAll([thread])
    }
}

@Suite struct SemaphoreTests {
    @Test func countsPermits() throws {
        let semaphore = try Semaphore(2)
        #expect(semaphore.acquire())
        #expect(semaphore.acquire(blocking: false))
        #expect(!semaphore.acquire(blocking: false))
        #expect(try !semaphore.acquire(timeout: 0.02))
        try semaphore.release()
        #expect(semaphore.available == 1)
        try semaphore.release(3)
        #expect(semaphore.available == 4)
    }

    @Test func invalidArgumentsThrow() {
        #expect(throws: ThreadingError.self) { try Semaphore(-1) }
        #expect(throws: ThreadingError.self) { try Semaphore().release(0) }
    }

    @Test func releaseWakesBlockedAcquirer() throws {
        let semaphore = try Semaphore(0)
        let got = Event()
        let thread = try spawn { if (try? semaphore.acquire(timeout: patience)) == true { got.set() } }
        #expect(!got.wait(timeout: 0.03))
        try semaphore.release()
        #expect(got.wait(timeout: patience))
        try joinAll([thread])
    }

    @Test func neverMoreHoldersThanPermits() throws {
        let semaphore = try Semaphore(3)
        let inside = Counter(), maximum = Recorder<Int>()
        let lock = Lock()
        final class Box: @unchecked Sendable { var current = 0; var peak = 0 }
        let box = Box()
        let threads = try (0..<8).map { _ in
            try spawn {
                for _ in 0..<2_000 {
                    semaphore.withPermit {
                        lock.withLock {
                            box.current += 1
                            box.peak = max(box.peak, box.current)
                        }
                        inside.add()
                        lock.withLock { box.current -= 1 }
                    }
                }
            }
        }
        try joinAll(threads)
        maximum.append(box.peak)
        #expect(box.peak <= 3)
        #expect(inside.value == 16_000)
        #expect(semaphore.available == 3)
    }

    @Test func boundedSemaphoreRefusesOverRelease() throws {
        let semaphore = try BoundedSemaphore(2)
        #expect(semaphore.acquire())
        try semaphore.release()
        do {
            try semaphore.release()
            Issue.record("over-release was accepted")
        } catch let error as ThreadingError {
            #expect(error.code == .boundedSemaphoreOverReleased)
        }
        #expect(semaphore.available == 2)
        #expect(semaphore.acquire())
        #expect(throws: ThreadingError.self) { try semaphore.release(2) }
        try semaphore.release(1)
    }
}

@Suite struct BarrierTests {
    @Test func releasesAllPartiesWithDistinctIndicesAndRunsActionOnce() throws {
        let actions = Counter()
        let barrier = try Barrier(parties: 5, action: { actions.add() })
        #expect(barrier.parties == 5)
        let indices = Recorder<Int>()
        for _ in 0..<3 {  // the barrier is reusable round after round
            let threads = try (0..<5).map { _ in try spawn { indices.append(try barrier.wait(timeout: patience)) } }
            try joinAll(threads)
        }
        #expect(actions.value == 3)
        #expect(indices.values.count == 15)
        #expect(Set(indices.values) == Set(0..<5))
        #expect(!barrier.isBroken)
        #expect(barrier.nWaiting == 0)
    }

    @Test func nWaitingCountsWaiters() throws {
        let barrier = try Barrier(parties: 3)
        let threads = try (0..<2).map { _ in try spawn { _ = try? barrier.wait(timeout: patience) } }
        while barrier.nWaiting < 2 { Thread.sleepBriefly() }
        #expect(barrier.nWaiting == 2)
        try barrier.wait(timeout: patience)
        try joinAll(threads)
    }

    @Test func timeoutBreaksTheBarrierForEveryone() throws {
        let barrier = try Barrier(parties: 3)
        let errors = Recorder<Bool>()
        let other = try spawn {
            do { try barrier.wait(timeout: patience) } catch is BrokenBarrierError { errors.append(true) }
        }
        while barrier.nWaiting < 1 { Thread.sleepBriefly() }
        #expect(throws: BrokenBarrierError.self) { try barrier.wait(timeout: 0.05) }
        try joinAll([other])
        #expect(errors.values == [true])
        #expect(barrier.isBroken)
        #expect(throws: BrokenBarrierError.self) { try barrier.wait(timeout: 0) }
        barrier.reset()
        #expect(!barrier.isBroken)
    }

    @Test func constructorTimeoutIsTheDefault() throws {
        let barrier = try Barrier(parties: 2, timeout: 0.03)
        #expect(throws: BrokenBarrierError.self) { try barrier.wait() }
    }

    @Test func abortAndResetWakeWaitersWithBrokenBarrier() throws {
        for breaker in ["abort", "reset"] {
            let barrier = try Barrier(parties: 3)
            let broken = Counter()
            let threads = try (0..<2).map { _ in
                try spawn {
                    do { try barrier.wait(timeout: patience) } catch is BrokenBarrierError { broken.add() }
                }
            }
            while barrier.nWaiting < 2 { Thread.sleepBriefly() }
            if breaker == "abort" { barrier.abort() } else { barrier.reset() }
            try joinAll(threads)
            #expect(broken.value == 2, "\(breaker)")
            #expect(barrier.isBroken == (breaker == "abort"))
        }
    }

    @Test func failingActionBreaksBarrierAndReachesItsThread() throws {
        struct ActionFailed: Error {}
        let barrier = try Barrier(parties: 2, action: { throw ActionFailed() })
        let outcomes = Recorder<String>()
        let threads = try (0..<2).map { _ in
            try spawn {
                do {
                    try barrier.wait(timeout: patience)
                    outcomes.append("passed")
                } catch is ActionFailed {
                    outcomes.append("action")
                } catch is BrokenBarrierError {
                    outcomes.append("broken")
                }
            }
        }
        try joinAll(threads)
        #expect(outcomes.values.sorted() == ["action", "broken"])
        #expect(barrier.isBroken)
    }

    @Test func zeroPartiesIsAnError() {
        #expect(throws: ThreadingError.self) { try Barrier(parties: 0) }
    }
}

/// Descriptions show state as Python's reprs do.
@Suite struct DescriptionTests {
    @Test func eventSemaphoreConditionAndBarrierShowTheirState() throws {
        let event = Event()
        #expect(event.description.hasPrefix("<Event at 0x") && event.description.hasSuffix(": unset>"))
        event.set()
        #expect(event.description.hasSuffix(": set>"))

        let semaphore = try Semaphore(2)
        semaphore.acquire()
        #expect(semaphore.description.hasPrefix("<Semaphore at 0x") && semaphore.description.hasSuffix(": value=1>"))
        let bounded = try BoundedSemaphore(3)
        bounded.acquire()
        #expect(bounded.description.hasPrefix("<BoundedSemaphore at 0x") && bounded.description.hasSuffix(": value=2/3>"))

        let condition = Condition(lock: Lock())
        #expect(condition.description == "<Condition(<unlocked Lock>, 0)>")

        let barrier = try Barrier(parties: 3)
        #expect(barrier.description.hasSuffix(": waiters=0/3>"))
        let waiter = Thread { _ = try? barrier.wait(timeout: 10) }
        try waiter.start()
        var spins = 0
        while barrier.nWaiting == 0, spins < 1000 {
            Thread.sleep(0.005)
            spins += 1
        }
        #expect(barrier.description.hasSuffix(": waiters=1/3>"))
        barrier.abort()
        #expect(barrier.description.hasSuffix(": broken>"))
        try waiter.join(timeout: 10)
    }
}
