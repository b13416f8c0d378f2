import Testing
@testable import Threading

struct Failure: Error, Equatable { let code: Int }

@Suite struct FutureTests {
    @Test func lifecycleOfAFuture() throws {
        let future = Future<Int>()
        #expect(!future.isDone && !future.isRunning && !future.isCancelled)
        #expect(throws: TimeoutError.self) { try future.result(timeout: 0.01) }
        #expect(throws: TimeoutError.self) { try future.exception(timeout: 0) }
        #expect(try future.setRunningOrNotifyCancel())
        #expect(future.isRunning)
        #expect(throws: ThreadingError.self) { try future.setRunningOrNotifyCancel() }  // only once
        #expect(!future.cancel())  // running calls cannot be cancelled
        try future.setResult(5)
        #expect(future.isDone && !future.isRunning)
        #expect(try future.result() == 5)
        #expect(try future.exception() == nil)
        #expect(throws: ThreadingError.self) { try future.setResult(6) }
        #expect(throws: ThreadingError.self) { try future.setException(Failure(code: 1)) }
        #expect(!future.cancel())
    }

    @Test func failedFutureRethrows() throws {
        let future = Future<Int>()
        try future.setException(Failure(code: 3))
        #expect(throws: Failure(code: 3)) { try future.result() }
        #expect(try future.exception() as? Failure == Failure(code: 3))
    }

    @Test func cancelledFuture() throws {
        let future = Future<String>()
        #expect(future.cancel())
        #expect(future.cancel())  // again: still cancelled
        #expect(future.isCancelled && future.isDone)
        #expect(try !future.setRunningOrNotifyCancel())
        #expect(throws: CancelledError.self) { try future.result() }
        #expect(throws: CancelledError.self) { try future.exception() }
        // CPython's test_concurrent_futures: a second notification is a RuntimeError.
        #expect(throws: ThreadingError.self) { try future.setRunningOrNotifyCancel() }
        #expect(throws: ThreadingError.self) { try Future<Int>.finished(1).setRunningOrNotifyCancel() }
    }

    /// Python has two cancelled states: `wait` and `as_completed` count a cancelled future
    /// done only once an executor has acknowledged it (CANCELLED_AND_NOTIFIED).
    @Test func aCancelledFutureCountsForWaitOnlyOnceNotified() throws {
        let cancelled = Future<Int>()
        #expect(cancelled.cancel())
        #expect(cancelled.isDone, "done() is true for both cancelled states")
        var outcome = wait([cancelled], timeout: 0.02)
        #expect(outcome.done.isEmpty && outcome.notDone == [cancelled])
        var completed = asCompleted([cancelled], timeout: 0.02)
        #expect(throws: TimeoutError("1 (of 1) futures unfinished")) { try completed.next() }
        #expect(try !cancelled.setRunningOrNotifyCancel())
        outcome = wait([cancelled], timeout: 0.02)
        #expect(outcome.done == [cancelled] && outcome.notDone.isEmpty)
        completed = asCompleted([cancelled], timeout: 0.02)
        #expect(try completed.next() === cancelled)
    }

    @Test func aWaitOnACancelledFutureWakesWhenItsExecutorNotifies() throws {
        let cancelled = Future<Int>()
        cancelled.cancel()
        let notifier = Thread { Thread.sleep(0.02); _ = try? cancelled.setRunningOrNotifyCancel() }
        try notifier.start()
        let outcome = wait([cancelled], timeout: 10)
        #expect(outcome.done == [cancelled])
        try notifier.join(timeout: 10)
    }

    @Test func doneCallbacksRunOnceWhenDoneOrImmediately() throws {
        let future = Future<Int>()
        let calls = Recorder<Int>()
        future.addDoneCallback { calls.append((try? $0.result()) ?? -1) }
        #expect(calls.values.isEmpty)
        try future.setResult(9)
        future.addDoneCallback { calls.append((try? $0.result()) ?? -1) }
        #expect(calls.values == [9, 9])
        let cancelled = Future<Int>()
        cancelled.addDoneCallback { calls.append($0.isCancelled ? 0 : 1) }
        cancelled.cancel()
        #expect(calls.values == [9, 9, 0])
    }

    @Test func blockedResultWakesWhenSetFromAnotherThread() throws {
        let future = Future<Int>()
        let thread = try spawn {
            _ = Event().wait(timeout: 0.01)
            try future.setResult(11)
        }
        #expect(try future.result(timeout: patience) == 11)
        try joinAll([thread])
    }

    @Test func awaitingAFuture() async throws {
        let future = Future<Int>()
        let thread = try spawn { try future.setResult(21) }
        #expect(try await future.value == 21)
        try joinAll([thread])
        let failed = Future<Int>()
        try failed.setException(Failure(code: 2))
        await #expect(throws: Failure(code: 2)) { try await failed.value }
    }

    @Test func futuresHashByIdentity() {
        let a = Future<Int>(), b = Future<Int>()
        #expect(a == a && a != b)
        #expect(Set([a, b, a]).count == 2)
    }
}

@Suite struct ThreadPoolExecutorTests {
    @Test func submitRunsOnWorkerThreadsWithThePrefix() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 2, threadNamePrefix: "crunch")
        #expect(executor.maxWorkers == 2)
        let future = try executor.submit { Thread.current.name }
        #expect(try future.result(timeout: patience).hasPrefix("crunch_"))
        let failing = try executor.submit { () throws -> Int in throw Failure(code: 4) }
        #expect(throws: Failure(code: 4)) { try failing.result(timeout: patience) }
        executor.shutdown()
    }

    @Test func neverMoreThreadsThanMaxWorkers() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 3)
        let names = Recorder<String>()
        let futures = try (0..<200).map { _ in try executor.submit { names.append(Thread.current.name) } }
        for future in futures { try future.result(timeout: patience) }
        executor.shutdown()
        #expect(Set(names.values).count <= 3)
        #expect(names.values.count == 200)
    }

    @Test func defaultMaxWorkersFollowsPython() throws {
        let executor = try ThreadPoolExecutor()
        #expect(executor.maxWorkers == min(32, cpuCount() + 4))
        executor.shutdown()
        #expect(throws: ThreadingError.self) { try ThreadPoolExecutor(maxWorkers: 0) }
    }

    @Test func mapKeepsInputOrder() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 4)
        var results = try executor.map(0..<100) { (n: Int) -> Int in
            if n % 7 == 0 { _ = Event().wait(timeout: 0.001) }
            return n * n
        }
        #expect(try results.collect() == (0..<100).map { $0 * $0 })
        #expect(throws: ThreadingError.self) { try executor.map([1], chunksize: 0) { $0 } }
        executor.shutdown()
    }

    @Test func mapRethrowsAndTimesOut() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 2)
        var failing = try executor.map([1, 2, 3]) { (n: Int) -> Int in
            if n == 2 { throw Failure(code: n) }
            return n
        }
        #expect(try failing.next() == 1)
        #expect(throws: Failure(code: 2)) { try failing.next() }
        #expect(try failing.next() == nil)

        let gate = Event()
        var slow = try executor.map([1], timeout: 0.03) { (n: Int) -> Int in
            gate.wait(timeout: patience)
            return n
        }
        #expect(throws: TimeoutError.self) { try slow.next() }
        gate.set()
        executor.shutdown()
    }

    @Test func submitAfterShutdownThrows() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 1)
        executor.shutdown()
        #expect(throws: ThreadingError.self) { try executor.submit { 1 } }
    }

    @Test func shutdownWaitsForQueuedWork() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 2)
        let done = Counter()
        let futures = try (0..<50).map { _ in
            try executor.submit {
                _ = Event().wait(timeout: 0.0005)
                done.add()
            }
        }
        executor.shutdown(wait: true)
        #expect(done.value == 50)
        #expect(futures.allSatisfy { $0.isDone })
    }

    @Test func shutdownCancelFuturesCancelsQueuedCalls() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 1)
        let gate = Event(), started = Event()
        let running = try executor.submit {
            started.set()
            gate.wait(timeout: patience)
            return 1
        }
        #expect(started.wait(timeout: patience))
        let queued = try (0..<5).map { i in try executor.submit { i } }
        let shutter = try spawn { executor.shutdown(wait: true, cancelFutures: true) }
        while !queued.allSatisfy({ $0.isCancelled }) { Thread.sleepBriefly() }
        gate.set()
        try joinAll([shutter])
        #expect(try running.result() == 1)
    }

    @Test func failingInitializerBreaksTheExecutor() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 1, initializer: { throw Failure(code: 9) })
        let first = try executor.submit { 1 }
        do {
            _ = try first.result(timeout: patience)
            Issue.record("a call ran although the initializer failed")
        } catch let error as ThreadingError {
            #expect(error.code == .brokenExecutor)
        }
        #expect(throws: ThreadingError.self) { try executor.submit { 2 } }
        executor.shutdown()
    }

    @Test func initializerRunsOncePerWorker() throws {
        let initialized = Counter()
        let executor = try ThreadPoolExecutor(maxWorkers: 2, initializer: { initialized.add() })
        let futures = try (0..<20).map { i in try executor.submit { i } }
        for future in futures { _ = try future.result(timeout: patience) }
        executor.shutdown()
        #expect((1...2).contains(initialized.value))
    }

    @Test func usingShutsDownAfterTheBody() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 2)
        let sum = try executor.using { pool in
            try (1...10).map { i in try pool.submit { i } }.reduce(0) { $0 + (try $1.result()) }
        }
        #expect(sum == 55)
        #expect(throws: ThreadingError.self) { try executor.submit { 0 } }
    }
}

@Suite struct WaitAndAsCompletedTests {
    @Test func asCompletedYieldsInCompletionOrderEachOnce() throws {
        let futures = (0..<3).map { _ in Future<Int>() }
        var completed = asCompleted(futures + [futures[0]])
        try futures[2].setResult(2)
        #expect(try completed.next() === futures[2])
        try futures[0].setResult(0)
        #expect(try completed.next() === futures[0])
        try futures[1].setResult(1)
        #expect(try completed.next() === futures[1])
        #expect(try completed.next() == nil)
    }

    @Test func asCompletedTimesOut() throws {
        let done = Future<Int>(), pending = Future<Int>()
        try done.setResult(1)
        let running = Future<Int>(), queued = Future<Int>()
        var completed = asCompleted([done, pending, running, queued], timeout: 0.03)
        #expect(try completed.next() === done)
        // The message CPython's test_concurrent_futures checks.
        #expect(throws: TimeoutError("3 (of 4) futures unfinished")) { try completed.next() }
    }

    @Test func asCompletedWithAnExecutorAsInTheChapter() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 3)
        let strings = ["a", "bb", "ccc", "dddd"]
        let futures = try strings.map { s in try executor.submit { (s, s.count) } }
        var dict: [String: Int] = [:]
        var completed = asCompleted(futures)
        while let future = try completed.next() {
            let (key, value) = try future.result()
            dict[key] = value
        }
        executor.shutdown()
        #expect(dict == ["a": 1, "bb": 2, "ccc": 3, "dddd": 4])
    }

    @Test func waitAllCompleted() throws {
        let futures = (0..<3).map { _ in Future<Int>() }
        let setter = try spawn { for (i, f) in futures.enumerated() { try f.setResult(i) } }
        let result = wait(futures, timeout: patience)
        #expect(result.done == Set(futures))
        #expect(result.notDone.isEmpty)
        try joinAll([setter])
    }

    @Test func waitFirstCompletedAndTimeout() throws {
        let a = Future<Int>(), b = Future<Int>()
        let timedOut = wait([a, b], timeout: 0.02, returnWhen: .firstCompleted)
        #expect(timedOut.done.isEmpty && timedOut.notDone == [a, b])
        try b.setResult(1)
        let first = wait([a, b], timeout: patience, returnWhen: .firstCompleted)
        #expect(first.done == [b] && first.notDone == [a])
        #expect(wait([Future<Int>](), returnWhen: .firstCompleted).done.isEmpty)
    }

    @Test func waitFirstException() throws {
        let ok = Future<Int>(), failing = Future<Int>(), pending = Future<Int>()
        try ok.setResult(1)
        let setter = try spawn { try failing.setException(Failure(code: 1)) }
        let result = wait([ok, failing, pending], timeout: patience, returnWhen: .firstException)
        #expect(result.done == [ok, failing] && result.notDone == [pending])
        try joinAll([setter])
        // Without any failure it behaves like allCompleted.
        let x = Future<Int>(), y = Future<Int>()
        try x.setResult(1)
        try y.setResult(2)
        #expect(wait([x, y], returnWhen: .firstException).done == [x, y])
    }
}

extension Future where Value == Int {
    static func finished(_ value: Int) throws -> Future<Int> {
        let future = Future<Int>()
        try future.setResult(value)
        return future
    }
}
