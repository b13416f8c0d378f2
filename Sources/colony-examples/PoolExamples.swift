import Colony
import ColonyWorker
import Dispatch
import Glibc

/// Task descriptors that the worker program and the client both use. In a project of your
/// own they live in a small module that both executables import.
enum SquareTasks {
    static let square = PoolTask<Int, Int>("square")

    /// The worker program's bodies: its own `square`, and the stock tasks.
    static let registry: TaskRegistry = {
        var registry = TaskRegistry.stock
        registry.register(square) { $0 * $0 }
        return registry
    }()
}

/// A client and a worker program of the distributed pool.
enum PoolExamples {
    static let sha256 = PoolTask<String, String>("sha256")

    /// `pool-map PORT STATE_DIR`: a map over the stock `sha256` task of `colony worker`.
    static func map() throws {
        try withPool("pool-map") { pool in
            let words = ["alpha", "beta", "gamma", "delta"]
            let digests = try await pool.map(sha256, words)
            for (word, digest) in zip(words, digests) { say("\(word)  \(digest.prefix(16))") }
        }
    }

    /// `pool-squares PORT STATE_DIR`: Python's `print(pool.map(f, range(1, 11)))` with the task
    /// `square` of the `pool-worker` program.
    static func squares() throws {
        try withPool("pool-squares") { pool in
            say("\(try await pool.map(SquareTasks.square, 1...10))")
        }
    }

    /// `pool-worker PORT STATE_DIR [PROCESSES]`: a worker node of your own, serving `square`
    /// and the stock tasks until SIGTERM or SIGINT (then it drains and exits).
    static func worker() throws {
        let arguments = Array(CommandLine.arguments.dropFirst(2))
        guard (2...3).contains(arguments.count), let port = Int(arguments[0]) else {
            print("usage: colony-examples pool-worker PORT STATE_DIR [PROCESSES]")
            return
        }
        var options = WorkerOptions(port: port, trust: .stateDirectory(path: arguments[1]))
        options.processes = arguments.count == 3 ? Int(arguments[2]) ?? 2 : 2
        options.node = "pool-worker-\(getpid())"
        let node = try WorkerNode(options: options, registry: SquareTasks.registry)
        let sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { node.drain() }
            source.resume()
            return source
        }
        let done = Future<Void>()
        Task.detached {
            do { try done.setResult(try await node.run()) } catch { try? done.setException(error) }
        }
        try done.result()
        _ = sources
    }

    /// `pool-orphan PORT STATE_DIR READY_FILE`: submits a slow call and a slow map, writes their
    /// job ids to READY_FILE, and waits to be killed: a crash drill for adopting results.
    static func orphan() throws {
        let arguments = Array(CommandLine.arguments.dropFirst(2))
        guard arguments.count == 3, let port = Int(arguments[0]) else {
            print("usage: colony-examples pool-orphan PORT STATE_DIR READY_FILE")
            return
        }
        let ready = Future<String>()
        Task.detached {
            do {
                let manager = try await Manager.connect(port: port, trust: .stateDirectory(path: arguments[1]))
                let pool = try await manager.pool("orphans")
                let sleep = PoolTask<Double, Double>("sleep")
                // Long enough that the drill's kill lands while all three calls still run,
                // even on a loaded machine (the results of a call that finished first went
                // to this client and die with it).
                let slow = try await pool.applyAsync(sleep, 3.5)
                let words = try await pool.mapAsync(sleep, [3.0, 3.25])
                try ready.setResult("\(slow.jobID) \(words.jobID)")
                try await Task.sleep(for: .seconds(3_600))
                _ = manager
            } catch {
                try? ready.setException(error)
            }
        }
        let ids = try ready.result(timeout: 60)
        let file = fopen(arguments[2] + ".tmp", "w")
        fputs(ids + "\n", file)
        fclose(file)
        rename(arguments[2] + ".tmp", arguments[2])
        Thread.sleep(3_600)
    }

    private static func withPool(_ name: String, _ body: @escaping @Sendable (Pool) async throws -> Void) throws {
        let arguments = Array(CommandLine.arguments.dropFirst(2))
        guard arguments.count == 2, let port = Int(arguments[0]) else {
            print("usage: colony-examples \(name) PORT STATE_DIR")
            return
        }
        let done = Future<Void>()
        Task.detached {
            do {
                let manager = try await Manager.connect(port: port, trust: .stateDirectory(path: arguments[1]))
                try await body(try await manager.pool())
                await manager.close()
                try done.setResult(())
            } catch {
                try? done.setException(error)
            }
        }
        try done.result(timeout: 120)
    }
}
