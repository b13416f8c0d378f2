import Colony
import CMemoryMapShim

/// Runs `body` (which performs `batch` operations) repeatedly for about `seconds` and returns
/// operations per second.
func opsPerSecond(seconds: Double, batch: Int, _ body: () throws -> Void) rethrows -> Double {
    try body()  // warm up
    let start = colony_monotonic_ns()
    let budget = UInt64(seconds * 1e9)
    var operations = 0
    var elapsed: UInt64 = 0
    repeat {
        try body()
        operations += batch
        elapsed = colony_monotonic_ns() - start
    } while elapsed < budget
    return Double(operations) / (Double(elapsed) / 1e9)
}

/// The `local` benchmark: the thread core's hot paths, each the same loop as the CPython
/// script in `PythonReference.swift`.
struct LocalWorkloads {
    let seconds: Double

    func lockAcquireRelease() -> Double {
        let lock = Lock()
        return opsPerSecond(seconds: seconds, batch: 100_000) {
            for _ in 0..<100_000 {
                lock.acquire()
                try? lock.release()
            }
        }
    }

    func rlockAcquireRelease() -> Double {
        let lock = RLock()
        return opsPerSecond(seconds: seconds, batch: 100_000) {
            for _ in 0..<100_000 {
                lock.acquire()
                try? lock.release()
            }
        }
    }

    func queuePutGet() throws -> Double {
        let queue = Queue<Int>()
        return try opsPerSecond(seconds: seconds, batch: 100_000) {
            for i in 0..<100_000 {
                try queue.put(i)
                _ = try queue.get()
            }
        }
    }

    func queueTwoThreads() throws -> Double {
        let queue = Queue<Int>()
        let items = 200_000
        return try opsPerSecond(seconds: seconds, batch: items) {
            let consumer = Thread {
                for _ in 0..<items { _ = try queue.get() }
            }
            try consumer.start()
            for i in 0..<items { try queue.put(i) }
            try consumer.join()
        }
    }

    func executorSubmitResult() throws -> Double {
        let executor = try ThreadPoolExecutor(maxWorkers: 2)
        defer { executor.shutdown() }
        let batch = 1_000
        return try opsPerSecond(seconds: seconds, batch: batch) {
            var futures: [Future<Int>] = []
            futures.reserveCapacity(batch)
            for i in 0..<batch { futures.append(try executor.submit { i }) }
            for future in futures { _ = try future.result() }
        }
    }

    /// Round trips per second and the round-trip latencies in microseconds.
    func eventPingPong() throws -> (perSecond: Double, latenciesMicros: [Double]) {
        let ping = Event(), pong = Event(), stop = Event()
        let responder = Thread {
            while true {
                ping.wait()
                ping.clear()
                if stop.isSet { return }
                pong.set()
            }
        }
        try responder.start()
        var latencies: [Double] = []
        let rate = opsPerSecond(seconds: seconds, batch: 1_000) {
            for _ in 0..<1_000 {
                let start = colony_monotonic_ns()
                ping.set()
                pong.wait()
                pong.clear()
                latencies.append(Double(colony_monotonic_ns() - start) / 1e3)
            }
        }
        stop.set()
        ping.set()
        try responder.join()
        return (rate, latencies)
    }
}

/// The value at quantile `q` (0...1) of `values`.
func percentile(_ values: [Double], _ q: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    let index = min(sorted.count - 1, Int((Double(sorted.count - 1) * q).rounded()))
    return sorted[index]
}
