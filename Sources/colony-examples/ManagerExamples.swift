import Colony
import Glibc

/// Programs that use a running manager.
enum ManagerExamples {
    /// Connects to the manager given on the command line, creates anonymous objects (one
    /// nested in another), prints "ready", and waits until it is killed: the manager must
    /// free them when the connection dies.
    static func hold() throws {
        try holdUntilKilled("manager-hold") { manager, ready in
            let scratch = try await manager.dict(nil, String.self, Int.self)
            try await scratch.update(["a": 1, "b": 2])
            let log = try await manager.list(nil, String.self)
            try await log.append("held")
            let index = try await manager.dict(nil, String.self, ObjectRef.self)
            try await index.set("log", log.reference)
            ready.set()
            try await Task.sleep(nanoseconds: 3_600 * 1_000_000_000)
            _ = (scratch, log, index)
        }
    }

    /// Takes shared locks and parks calls, then waits to be killed: the crash-safety tests
    /// kill it and check that the manager gives everything back.
    static func holdLocks() throws {
        try holdUntilKilled("manager-hold-locks") { manager, ready in
            let lock = try await manager.lock("L")
            let rlock = try await manager.rlock("R")
            let semaphore = try await manager.semaphore("S", value: 2)
            let queue = try await manager.queue("Q", String.self)
            let barrier = try await manager.barrier("B", parties: 3)
            try await lock.acquire()
            try await rlock.acquire()
            try await rlock.acquire()
            try await semaphore.acquire()
            try await semaphore.acquire()
            let parkedGet = Task { try await queue.get() }
            let parkedWait = Task { try await barrier.wait() }
            // Ready once both calls are parked on the manager.
            while try await waiting(manager, "Q") + waiting(manager, "B") < 2 { try await Task.sleep(nanoseconds: 5_000_000) }
            ready.set()
            _ = try await (parkedGet.value, parkedWait.value)
        }
    }

    /// Connects to the manager at PORT with STATE_DIR's trust, runs `setUp` (which sets
    /// `ready` when done), writes READY_FILE, and sleeps until the process is killed.
    private static func holdUntilKilled(_ name: String, _ setUp: @escaping @Sendable (Manager, Event) async throws -> Void) throws {
        let arguments = Array(CommandLine.arguments.dropFirst(2))
        guard arguments.count == 3, let port = Int(arguments[0]) else {
            print("usage: colony-examples \(name) PORT STATE_DIR READY_FILE")
            return
        }
        let ready = Event()
        let task = Task.detached {
            try await setUp(try await Manager.connect(port: port, trust: .stateDirectory(path: arguments[1])), ready)
        }
        guard ready.wait(timeout: 30) else {
            print("could not reach the manager")
            task.cancel()
            return
        }
        let readyFile = fopen(arguments[2], "w")
        fputs("ready\n", readyFile)
        fclose(readyFile)
        Thread.sleep(3_600)
    }

    private static func waiting(_ manager: Manager, _ name: String) async throws -> Int {
        let objects = try await manager.status()["objects"]?.arrayValue ?? []
        return objects.first { $0["name"] == .string(name) }?["waiting"]?.int64Value.map(Int.init) ?? 0
    }

    /// The chapter's Example 15-1: `make_dict` runs `f` on each string in its own process;
    /// every process gets the manager's dict proxy as an argument and stores its result.
    static func makeDict() throws {
        let arguments = Array(CommandLine.arguments.dropFirst(2))
        guard arguments.count == 2, let port = Int(arguments[0]) else {
            print("usage: colony-examples make-dict PORT STATE_DIR")
            return
        }
        let result = Future<[String: String]>()
        Task.detached {
            do {
                let manager = try await Manager.connect(port: port, trust: .stateDirectory(path: arguments[1]))
                let d = try await manager.dict(nil, String.self, String.self)
                var workers: [ChildProcess] = []
                for s in ["alpha", "beta", "gamma", "delta"] {
                    let p = try ChildProcess(target: "runner", arguments: Runner(s: s, d: d))
                    try p.start()
                    workers.append(p)
                }
                for p in workers { try p.join() }
                try result.setResult(try await d.copy())
                await manager.close()
            } catch {
                try? result.setException(error)
            }
        }
        let d = try result.result(timeout: 60)
        say(d.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
    }

    struct Runner: Codable {
        var s: String
        var d: DictProxy<String, String>
    }

    /// Run a long time, and eventually return a result.
    static func f(_ s: String) -> String {
        Thread.sleep(Double.random(in: 0..<0.05))  // simulate slowness
        return s + s
    }

    static func runner(_ job: Runner) throws {
        say("\(CurrentProcess.pid) \(job.s)")
        try job.d.set(job.s, f(job.s))
    }
}
