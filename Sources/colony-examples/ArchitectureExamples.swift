import Colony

/// The chapter's "Threaded Program Architecture" classes, in Swift.
enum ArchitectureExamples {
    /// A thread that alone talks to an external resource: other threads call `request` as
    /// they would call the resource, and the calls are serialized through a queue.
    final class ExternalInterfacing<Argument: Sendable, Result: Sendable>: Thread, @unchecked Sendable {
        private let externalCallable: @Sendable (Argument) -> Result
        private let requests = Queue<(Argument, Queue<Result>)>()

        init(_ externalCallable: @escaping @Sendable (Argument) -> Result) throws {
            self.externalCallable = externalCallable
            super.init(daemon: true)
            try start()
        }

        /// Called by other threads as `externalCallable` would be. Each request carries its
        /// own reply queue, so concurrent callers cannot receive each other's results.
        func request(_ argument: Argument) throws -> Result {
            let reply = Queue<Result>(maxsize: 1)
            try requests.put((argument, reply))
            return try reply.get()
        }

        override func run() throws {
            while true {
                let (argument, reply) = try requests.get()
                try reply.put(externalCallable(argument))
            }
        }
    }

    /// A thread that runs any callable handed to it, one at a time.
    final class Serializer: Thread, @unchecked Sendable {
        private let work = Queue<(@Sendable () -> any Sendable, Queue<any Sendable>)>()

        init() throws {
            super.init(daemon: true)
            try start()
        }

        /// Called by other threads as `callable` would be.
        func apply<Result: Sendable>(_ callable: @escaping @Sendable () -> Result) throws -> Result {
            let reply = Queue<any Sendable>(maxsize: 1)
            try work.put(({ callable() }, reply))
            return try reply.get() as! Result  // the reply is what `callable` returned
        }

        override func run() throws {
            while true {
                let (callable, reply) = try work.get()
                try reply.put(callable())
            }
        }
    }

    /// A resource that must not be used by two threads at once: it notices if it is.
    final class FragileResource: @unchecked Sendable {
        private let inUse = Lock()
        private(set) var calls = 0
        private(set) var overlaps = 0

        func use(_ n: Int) -> Int {
            if !inUse.acquire(blocking: false) { overlaps += 1 }
            defer { try? inUse.release() }
            calls += 1
            Thread.sleep(0.0001)
            return n * 2
        }
    }

    static func externalInterfacing() throws {
        let resource = FragileResource()
        let owner = try ExternalInterfacing<Int, Int> { resource.use($0) }
        let results = Queue<Bool>()
        let callers = (0..<4).map { caller in
            Thread {
                for i in 0..<25 {
                    let value = caller * 100 + i
                    try results.put(try owner.request(value) == value * 2)
                }
            }
        }
        for caller in callers { try caller.start() }
        for caller in callers { try caller.join() }
        var correct = 0
        while let ok = try? results.getNowait() { if ok { correct += 1 } }
        print("requests: 100, correct results: \(correct)")
        print("calls reaching the resource: \(resource.calls), overlapping calls: \(resource.overlaps)")
    }

    static func serializer() throws {
        let resource = FragileResource()
        let serializer = try Serializer()
        let callers = (0..<4).map { caller in
            Thread {
                for i in 0..<10 {
                    _ = try serializer.apply { resource.use(i) }
                    _ = try serializer.apply { "caller \(caller)" }
                }
            }
        }
        for caller in callers { try caller.start() }
        for caller in callers { try caller.join() }
        let greeting = try serializer.apply { "done" }
        print("serialized calls: \(resource.calls), overlapping calls: \(resource.overlaps), last: \(greeting)")
    }

    /// Python's `Worker` thread: takes (id, callable) requests, posts (id, result).
    final class Worker: Thread, @unchecked Sendable {
        private static let idLock = Lock()
        nonisolated(unsafe) private static var requestID = 0
        private let requests: Queue<(Int, @Sendable () -> String)>
        private let results: Queue<(Int, String)>

        init(requests: Queue<(Int, @Sendable () -> String)>, results: Queue<(Int, String)>) throws {
            self.requests = requests
            self.results = results
            super.init(daemon: true)
            try start()
        }

        /// Called by the main thread as `callable` would be, but returns a request id.
        func performWork(_ callable: @escaping @Sendable () -> String) throws -> Int {
            let id = Worker.idLock.withLock {
                Worker.requestID += 1
                return Worker.requestID
            }
            try requests.put((id, callable))
            return id
        }

        override func run() throws {
            while true {
                let (id, callable) = try requests.get()
                try results.put((id, callable()))
            }
        }
    }

    /// The chapter's complete worker-pool program with random arithmetic expressions.
    static func workerPool() throws {
        let requests = Queue<(Int, @Sendable () -> String)>()
        let results = Queue<(Int, String)>()
        let workers = try (0..<3).map { _ in try Worker(requests: requests, results: results) }
        // Python's int arithmetic, and true division giving a float.
        let operations: [String: @Sendable (Int, Int) -> String] = [
            "+": { String($0 + $1) }, "-": { String($0 - $1) }, "*": { String($0 * $1) },
            "/": { String(Double($0) / Double($1)) }, "%": { String($0 % $1) },
        ]
        func makeWork() -> String {
            "\(Int.random(in: 2..<10)) \(operations.keys.randomElement()!) \(Int.random(in: 2..<10))"
        }
        @Sendable func slowEvaluate(_ expression: String) -> String {
            Thread.sleep(Double(Int.random(in: 1..<5)) / 100)
            let parts = expression.split(separator: " ")
            return operations[String(parts[1])]!(Int(parts[0])!, Int(parts[2])!)
        }
        var workRequests: [Int: String] = [:]
        func showResults() {
            while let (id, result) = try? results.getNowait() {
                let expression = workRequests.removeValue(forKey: id)!
                print("Result \(id): \(expression) -> \(result)")
            }
        }
        for _ in 0..<10 {
            let expression = makeWork()
            let worker = workers.randomElement()!
            let id = try worker.performWork { slowEvaluate(expression) }
            workRequests[id] = expression
            print("Submitted request \(id): \(expression)")
            Thread.sleep(0.01)
            showResults()
        }
        while !workRequests.isEmpty {
            Thread.sleep(0.01)
            showResults()
        }
    }
}
