import ArgumentParser
import CMemoryMapShim
import Colony
import ColonyPool
import ColonyWire
import Foundation
import Glibc

/// `colony-bench scheduler`: the pool's scheduler alone, with simulated workers.
struct SchedulerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler", abstract: "The pool scheduler with no I/O: assignments plus completions per second, and bytes per queued call.")

    @Option(help: "Simulated workers (one place each).")
    var workers = 1000

    @Option(help: "Calls to run through the scheduler.")
    var tasks = 1_000_000

    @Option(help: "Calls per chunk.")
    var chunksize = 1

    @Option(name: .customLong("repeat"), help: "Measured runs, each with a fresh scheduler; assignments_per_s is the median run's (one run takes about half a second, and this machine's CPUs vary by a third from one to the next).")
    var repetitions = 5

    func validate() throws {
        guard (1...1_000_000).contains(workers) else { throw ValidationError("--workers must be 1...1000000") }
        guard (1...100_000_000).contains(tasks) else { throw ValidationError("--tasks must be 1...100000000") }
        guard chunksize >= 1 else { throw ValidationError("--chunksize must be at least 1") }
        guard (1...100).contains(repetitions) else { throw ValidationError("--repeat must be 1...100") }
    }

    func run() throws {
        // Options read once: an ArgumentParser property is a generic getter, slow in a loop.
        let (tasks, workers, chunksize) = (self.tasks, self.workers, self.chunksize)
        let calls = EncodedValues((0..<tasks).map { WireValue.array([.int(Int64($0))]) })
        // Memory the scheduler holds per queued call (its copy of the arguments and the job's
        // slot for it): every call submitted, no worker joined yet.
        let bytesPerCall: Double
        do {
            var queued = PoolScheduler()
            let heapBefore = colony_heap_bytes_in_use()
            _ = try queued.submit(client: PoolClientID(1), task: "echo", calls: calls, chunksize: chunksize, ordered: true)
            bytesPerCall = Double(Int(colony_heap_bytes_in_use()) - Int(heapBefore)) / Double(tasks)
        }
        var rates: [Double] = []
        for _ in 0..<repetitions {
            let (operations, seconds) = try SchedulerBench.measure(calls: calls, workers: workers, chunksize: chunksize)
            rates.append(Double(operations) / seconds)
        }
        let median = percentile(rates, 0.5)
        print(jsonLine([
            "benchmark": "scheduler", "workers": workers, "tasks": tasks, "chunksize": chunksize, "runs": repetitions,
            "assignments_per_s": median, "assignments_per_s_runs": rates, "unit": "an assignment or a completion",
            "calls_per_s": median * Double(tasks) / Double(SchedulerBench.operations(tasks: tasks, chunksize: chunksize)),
            "bytes_per_queued_call": bytesPerCall,
        ]))
    }

    /// Assignments plus completions for `tasks` calls in chunks of `chunksize`.
    static func operations(tasks: Int, chunksize: Int) -> Int { 2 * ((tasks + chunksize - 1) / chunksize) }

    /// One run with a fresh scheduler: the operations done and the seconds they took.
    static func measure(calls: EncodedValues, workers: Int, chunksize: Int) throws -> (Int, Double) {
        let tasks = calls.count
        var scheduler = PoolScheduler()
        var (job, actions) = try scheduler.submit(client: PoolClientID(1), task: "echo", calls: calls, chunksize: chunksize, ordered: true)
        let begin = DispatchTime.now().uptimeNanoseconds
        var pending: [(PoolAssignmentID, PoolWorkerID, Int)] = []
        var operations = 0
        func collect(_ actions: [PoolAction]) {
            for case .assign(let worker, let assignment, _, let calls, _, _) in actions {
                pending.append((assignment, worker, calls.count))
                operations += 1
            }
        }
        collect(actions)
        for index in 0..<workers {
            collect(scheduler.workerJoined(
                PoolWorkerID(UInt64(index + 1)), node: "sim", pid: index, capacity: 1, processes: 1, tasks: ["echo"], now: 0))
        }
        var delivered = 0
        var cursor = 0
        let results = EncodedValues([WireValue](repeating: .int(1), count: chunksize))
        while cursor < pending.count {
            let (assignment, worker, count) = pending[cursor]
            cursor += 1
            actions = try scheduler.completed(assignment, by: worker, results: count == chunksize ? results : results[0..<count])
            operations += 1
            collect(actions)
            if cursor % 4096 == 0 {
                // As the manager takes them: encoded, not decoded.
                delivered += try scheduler.takeBatch(job, limit: .max).batch.count
                pending.removeFirst(cursor)
                cursor = 0
            }
        }
        let (rest, finished) = try scheduler.takeBatch(job, limit: .max)
        delivered += rest.count
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9
        job = PoolJobID(0)
        guard finished, delivered == tasks else { throw ValidationError("the scheduler lost calls: \(delivered) of \(tasks) delivered") }
        return (operations, seconds)
    }
}

/// `colony-bench pool`: a manager and one `colony worker` on this machine, driven with the
/// Pool API; with --compare, CPython's Pool and ProcessPoolExecutor in the same run.
struct PoolBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool", abstract: "Pool throughput and apply latency through a manager and a worker node, optionally against CPython.")

    @Option(help: "manager (the only backend for now).")
    var backend = "manager"

    @Option(help: "Worker processes.")
    var workers = 2

    @Option(help: "Tasks (echo of an integer).")
    var tasks = 100_000

    @Option(help: "apply, apply_async, map or imap_unordered.")
    var mode = "map"

    @Option(help: "Chunk size (default: Python's automatic size for map, 1 for imap_unordered).")
    var chunksize: Int?

    @Flag(help: "Run the worker node's tasks on threads instead of processes.")
    var threads = false

    @Option(name: .customLong("repeat"), help: "Measured runs of the mode's calls, on each side (default: 5 for map, whose 100,000 calls take about 20 ms, too short for one sample on a shared machine; 1 otherwise). tasks_per_s is the median run's; apply's percentiles pool every run's calls.")
    var repetitions: Int?

    @Option(help: "The worker node's --prefetch (assignments held per process); default: colony worker's.")
    var prefetch: Int?

    @Flag(help: "Also run CPython's multiprocessing.Pool, ProcessPoolExecutor and the raw ping-pong in this run.")
    var compare = false

    @Flag(help: "The worker node and the client reach the manager over its Unix domain socket (no TLS), as same-host peers can.")
    var unix = false

    @Flag(help: "Run the client's calls on Swift's global executor, not on its connection's event loop (as colony-bench manager does).")
    var globalExecutor = false

    static let modes = ["apply", "apply_async", "map", "imap_unordered"]

    func validate() throws {
        guard backend == "manager" else { throw ValidationError("--backend: only 'manager' is built so far") }
        guard PoolBench.modes.contains(mode) else { throw ValidationError("--mode must be one of \(PoolBench.modes.joined(separator: ", "))") }
        guard (1...256).contains(workers) else { throw ValidationError("--workers must be 1...256") }
        guard (1...10_000_000).contains(tasks) else { throw ValidationError("--tasks must be 1...10000000") }
        if let chunksize, chunksize < 1 { throw ValidationError("--chunksize must be at least 1") }
        if let repetitions, !(1...100).contains(repetitions) { throw ValidationError("--repeat must be 1...100") }
    }

    /// How many measured runs each side makes.
    var runs: Int { repetitions ?? (mode == "map" ? 5 : 1) }

    func run() async throws {
        let server = try SpawnedManager(plaintext: false, threads: 1, busyPollMicroseconds: 200, unixSocket: unix)
        defer { server.stop() }
        let managerAddress = server.unixSocketPath.map { "unix:" + $0 } ?? "127.0.0.1:\(server.port)"
        let worker = Process()
        worker.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("colony")
        worker.arguments = ["worker", "--connect", managerAddress, "--state-dir", server.stateDirectory]
            + (threads ? ["--threads", String(workers)] : ["--processes", String(workers)])
            + (prefetch.map { ["--prefetch", String($0)] } ?? [])
        worker.standardOutput = FileHandle.nullDevice
        worker.standardError = FileHandle.nullDevice
        try worker.run()
        defer {
            kill(worker.processIdentifier, SIGKILL)
            var status: Int32 = 0
            waitpid(worker.processIdentifier, &status, 0)  // Foundation's waitUntilExit spins a run loop
        }
        let manager =
            if let path = server.unixSocketPath {
                try await Manager.connect(unixSocket: path, stateDirectory: server.stateDirectory)
            } else {
                try await Manager.connect(port: server.port, trust: .stateDirectory(path: server.stateDirectory))
            }
        let pool = try await manager.pool()
        let deadline = Date().addingTimeInterval(30)
        while try await pool.workers().isEmpty {
            guard Date() < deadline else { throw ValidationError("the worker node did not join within 30 s") }
            try await Task.sleep(for: .milliseconds(20))
        }
        let echo = PoolTask<Int, Int>("echo")
        _ = try await pool.map(echo, 0..<1000)  // warm up both ends

        let executor: any TaskExecutor = globalExecutor ? globalConcurrentExecutor : manager.executor
        var latencies: [Double] = []
        var rates: [Double] = []
        for _ in 0..<runs {
            let (runLatencies, seconds) = try await withTaskExecutorPreference(executor) {
                try await drive(pool, echo)
            }
            latencies += runLatencies
            rates.append(Double(tasks) / seconds)
        }
        await manager.close()

        let ours = percentile(rates, 0.5)
        var report: [String: Any] = [
            "benchmark": "pool", "backend": backend, "mode": mode, "workers": workers, "tasks": tasks, "tasks_per_s": ours,
            "runs": runs, "worker_kind": threads ? "threads" : "processes", "tls": !unix, "transport": unix ? "unix" : "tcp",
            "client_tasks_on": globalExecutor ? "global executor" : "event loop",
        ]
        if runs > 1 { report["tasks_per_s_runs"] = rates }
        if let chunksize { report["chunksize"] = chunksize }
        if let prefetch { report["prefetch"] = prefetch }
        if mode == "apply" {
            report["p50_us"] = percentile(latencies, 0.5)
            report["p99_us"] = percentile(latencies, 0.99)
        }
        if compare {
            var references: [String: Any] = [:]
            references["raw_tcp_ping_pong_round_trips_per_s"] = PingPongFloor.measure(seconds: 2)
            let arguments = [mode, String(workers), String(tasks), chunksize.map(String.init) ?? "auto", String(runs)]
            switch runPythonReference(script: PoolBench.cpythonScript, arguments: arguments) {
            case .success(let figures): references["cpython"] = figures
            case .failure(let unavailable): references["cpython"] = ["unavailable": unavailable.reason]
            }
            report["compare"] = references
            var ratios: [String: Double] = [:]
            if let cpython = references["cpython"] as? [String: Double] {
                if let pool = cpython["pool_tasks_per_s"], pool > 0 { ratios["vs_cpython"] = ours / pool }
                if let executor = cpython["executor_submit_tasks_per_s"], executor > 0 { ratios["vs_cpython_executor_submit"] = ours / executor }
                if mode == "apply", let theirs = cpython["apply_p50_us"], theirs > 0 { ratios["p50_vs_cpython"] = percentile(latencies, 0.5) / theirs }
            }
            if let floor = references["raw_tcp_ping_pong_round_trips_per_s"] as? Double, floor > 0 { ratios["vs_raw_ping_pong"] = ours / floor }
            report["ratio"] = ratios
        }
        print(jsonLine(report))
    }

    /// Runs the mode's calls; the apply latencies (µs) and the seconds it all took.
    private func drive(_ pool: Pool, _ echo: PoolTask<Int, Int>) async throws -> ([Double], Double) {
        var latencies: [Double] = []
        let begin = DispatchTime.now().uptimeNanoseconds
        switch mode {
        case "apply":
            latencies.reserveCapacity(tasks)
            for index in 0..<tasks {
                let start = DispatchTime.now().uptimeNanoseconds
                guard try await pool.apply(echo, index) == index else { throw ValidationError("a wrong result") }
                latencies.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000)
            }
        case "apply_async":
            var results: [AsyncResult<Int>] = []
            results.reserveCapacity(tasks)
            for index in 0..<tasks { results.append(try await pool.applyAsync(echo, index)) }
            for (index, result) in results.enumerated() where try await result.get() != index { throw ValidationError("a wrong result") }
        case "map":
            let results = try await pool.map(echo, 0..<tasks, chunksize: chunksize)
            guard results.count == tasks, results.last == tasks - 1 else { throw ValidationError("wrong results") }
        default:
            var count = 0
            for try await _ in try pool.imapUnordered(echo, 0..<tasks, chunksize: chunksize ?? 1) { count += 1 }
            guard count == tasks else { throw ValidationError("\(count) results of \(tasks)") }
        }
        return (latencies, Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9)
    }

    /// CPython's Pool in the same mode with the same workers, and ProcessPoolExecutor submit.
    static let cpythonScript = #"""
import json, sys, time
from multiprocessing import Pool
from concurrent.futures import ProcessPoolExecutor

def echo(x):
    return x

mode, workers, tasks, chunk, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
chunksize = None if chunk == "auto" else int(chunk)
out = {}
with Pool(workers) as pool:
    pool.map(echo, range(1000))
    latencies, rates = [], []
    for _ in range(runs):
        start = time.perf_counter()
        if mode == "apply":
            for i in range(tasks):
                t = time.perf_counter()
                pool.apply(echo, (i,))
                latencies.append((time.perf_counter() - t) * 1e6)
        elif mode == "apply_async":
            results = [pool.apply_async(echo, (i,)) for i in range(tasks)]
            for r in results:
                r.get()
        elif mode == "map":
            pool.map(echo, range(tasks), chunksize)
        else:
            for _ in pool.imap_unordered(echo, range(tasks), chunksize or 1):
                pass
        rates.append(tasks / (time.perf_counter() - start))
    if latencies:
        latencies.sort()
        out["apply_p50_us"] = latencies[len(latencies) // 2]
        out["apply_p99_us"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    rates.sort()
    out["pool_tasks_per_s"] = rates[len(rates) // 2]
with ProcessPoolExecutor(workers) as executor:
    list(executor.map(echo, range(1000)))
    n = min(tasks, 20000)
    start = time.perf_counter()
    futures = [executor.submit(echo, i) for i in range(n)]
    for f in futures:
        f.result()
    out["executor_submit_tasks_per_s"] = n / (time.perf_counter() - start)
print(json.dumps(out))
"""#
}
