import Testing
import Threading

/// The README's tour, verbatim, so that it keeps compiling and doing what it says.
@Suite struct ReadmeTourTests {
    @Test func tourRuns() throws {
        // Threads: a closure target, or a subclass overriding run().
        let worker = Thread(name: "worker") { print("hello from", Thread.current.name) }
        try worker.start()
        try worker.join()

        // Locks and conditions; `withLock` is Python's `with lock:`.
        let lock = Lock()
        lock.withLock { /* critical section */ }
        let ready = Condition()  // wraps a new RLock, as in Python
        try ready.withLock { _ = try ready.wait(for: { true }, timeout: 1) }

        // Queues with Python's blocking, timeouts and typed Empty / Full errors.
        let queue = Queue<Int>(maxsize: 10)
        try queue.put(1)
        let item = try queue.get(timeout: 0.5)  // throws QueueEmpty if nothing arrives
        try queue.taskDone()

        // Executors and futures.
        let executor = try ThreadPoolExecutor(maxWorkers: 4)
        let squares = try executor.using { pool in
            var results = try pool.map(1...10) { $0 * $0 }
            return try results.collect()
        }

        #expect(item == 1)
        #expect(squares == (1...10).map { $0 * $0 })
    }
}
