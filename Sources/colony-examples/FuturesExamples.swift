import Colony

/// The chapter's concurrent.futures versions of make_dict, on a thread pool.
enum FuturesExamples {
    /// "Run a long time, and eventually return a result."
    @Sendable static func f(_ s: String) -> String {
        Thread.sleep(Double.random(in: 0..<0.02))
        return s + s
    }

    @Sendable static func runner(_ s: String) -> (String, String) { (s, f(s)) }

    static let strings = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff"]

    static func show(_ d: [String: String]) {
        for key in d.keys.sorted() { print("\(key): \(d[key]!)") }
    }

    /// make_dict with `e.map(runner, strings)`.
    /// `shutdown(wait: false)` returns at once, but the calls already queued still run
    /// before the process exits, as in Python.
    static func shutdownWithoutWaiting() throws {
        let executor = try ThreadPoolExecutor(maxWorkers: 1)
        _ = try executor.submit {
            Thread.sleep(0.1)
            say("running call finished")
        }
        _ = try executor.submit { say("queued call ran") }
        executor.shutdown(wait: false)
        say("main returns")
    }

    static func executorMap() throws {
        let executor = try ThreadPoolExecutor()
        let d = try executor.using { e in
            var results = try e.map(strings, runner)
            return Dictionary(uniqueKeysWithValues: try results.collect())
        }
        show(d)
    }

    /// make_dict with `as_completed`.
    static func asCompletedDict() throws {
        let executor = try ThreadPoolExecutor()
        let d = try executor.using { e in
            let futures = try strings.map { s in try e.submit { runner(s) } }
            var d: [String: String] = [:]
            var completed = asCompleted(futures)
            while let future = try completed.next() {
                let (key, value) = try future.result()
                d[key] = value
            }
            return d
        }
        show(d)
    }
}
