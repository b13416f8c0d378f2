import ArgumentParser
import Colony
import Foundation
import Glibc
import NIOCore
import NIOPosix

/// `colony-bench manager`: the numbers users compare managers on.
struct ManagerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manager",
        abstract: "Shared-object throughput and latency against a manager it starts (or --connect), optionally compared with a raw TCP ping-pong, Redis over TLS and CPython's SyncManager.")

    @Option(help: "Client connections.")
    var clients = 1

    @Option(help: "dict_set_get, list_append_pop, value_increment, pipeline, queue_put_get, queue_batch, lock_acquire_release or event_ping_pong.")
    var workload = "dict_set_get"

    @Flag(help: "lock_acquire_release: every client on one lock (default: each on its own).")
    var contended = false

    @Option(help: "Seconds to measure.")
    var seconds = 3.0

    @Flag(help: "Run the manager and clients without TLS.")
    var plaintext = false

    @Flag(help: "The clients reach the manager it starts over its Unix domain socket; with --compare, the same clients over TLS and redis-benchmark over Redis's Unix socket run too.")
    var unix = false

    @Option(help: "Use a running manager at HOST:PORT (with --state-dir) instead of starting one.")
    var connect: String?

    @Option(help: "The state directory of the manager given with --connect.")
    var stateDir: String?

    @Option(help: "Event loop threads for the manager it starts.")
    var serverThreads = 1

    @Option(help: "Event loop threads shared by the client connections (0: Colony's default group, one per core).")
    var clientThreads = 1

    @Option(help: "Microseconds the manager it starts and the clients busy-poll before sleeping (0: off).")
    var busyPollUs = 200

    @Flag(help: "Run each client's task on Swift's global executor, not on its connection's event loop.")
    var globalExecutor = false

    @Flag(help: "dict_set_get only: each client is a plain thread calling the blocking face (as Python code does).")
    var blockingFace = false

    @Flag(help: "Also run the raw ping-pong floor, redis-benchmark over TLS and CPython's SyncManager in this run.")
    var compare = false

    @Option(help: "The manager it starts keeps named objects (colony manager --persist): off (the default here, to measure the manager alone), no, everysec or always. With --compare, the same clients against a manager without persistence and redis-benchmark against Redis with appendonly yes and the same appendfsync run too.")
    var persist = "off"

    @Flag(help: "The manager it starts counts metrics and serves them (colony manager --http-listen 127.0.0.1:0). With --compare, the same clients against a manager without them run too.")
    var metrics = false

    static let workloads = [
        "dict_set_get", "list_append_pop", "value_increment", "pipeline", "batch", "queue_put_get", "queue_batch", "lock_acquire_release",
        "event_ping_pong",
    ]

    func validate() throws {
        guard ManagerBench.workloads.contains(workload) else {
            throw ValidationError("--workload must be one of \(ManagerBench.workloads.joined(separator: ", "))")
        }
        guard clients >= 1, clients <= 1000 else { throw ValidationError("--clients must be 1...1000") }
        guard clientThreads >= 0, clientThreads <= 64 else { throw ValidationError("--client-threads must be 0...64") }
        guard (0...1_000_000).contains(busyPollUs) else { throw ValidationError("--busy-poll-us must be 0...1000000") }
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
        if blockingFace && workload != "dict_set_get" { throw ValidationError("--blocking-face goes with --workload dict_set_get") }
        if connect != nil && stateDir == nil && !plaintext { throw ValidationError("--connect needs --state-dir (or --plaintext)") }
        if unix && (connect != nil || plaintext || blockingFace) { throw ValidationError("--unix starts its own manager; it goes without --connect, --plaintext and --blocking-face") }
        guard ["off", "no", "everysec", "always"].contains(persist) else { throw ValidationError("--persist must be off, no, everysec or always") }
        if persist != "off" && (connect != nil || unix) { throw ValidationError("--persist starts its own manager over TCP; it goes without --connect and --unix") }
        if metrics && connect != nil { throw ValidationError("--metrics starts its own manager; it goes without --connect") }
    }

    func run() async throws {
        let server: SpawnedManager?
        let host: String, port: Int, directory: String
        if let connect {
            let parts = connect.split(separator: ":")
            guard parts.count == 2, let parsed = Int(parts[1]) else { throw ValidationError("--connect takes HOST:PORT") }
            (server, host, port, directory) = (nil, String(parts[0]), parsed, stateDir ?? "")
        } else {
            let spawned = try SpawnedManager(
                plaintext: plaintext, threads: serverThreads, busyPollMicroseconds: busyPollUs, unixSocket: unix,
                extraArguments: ["--persist", persist] + (metrics ? ["--http-listen", "127.0.0.1:0"] : []))
            (server, host, port, directory) = (spawned, "127.0.0.1", spawned.port, spawned.stateDirectory)
        }
        defer { server?.stop() }
        let key = try AuthKey.bytes(fromFile: directory + "/authkey")
        let trust: ManagerTrust = plaintext ? .insecurePlaintext : .stateDirectory(path: directory)

        let group: any EventLoopGroup = clientThreads == 0 ? Manager.defaultEventLoopGroup : MultiThreadedEventLoopGroup(numberOfThreads: clientThreads)
        /// One measured run with fresh client connections, over the socket or over TCP, against
        /// the manager above or `other`.
        func measure(overUnixSocket: Bool, against other: SpawnedManager? = nil) async throws -> (ClientLoad.Result, serverCPU: Double, clientCPU: Double) {
            let server = other ?? server
            let port = other?.port ?? port
            let key = try other.map { try AuthKey.bytes(fromFile: $0.stateDirectory + "/authkey") } ?? key
            let trust: ManagerTrust = other.map { plaintext ? .insecurePlaintext : .stateDirectory(path: $0.stateDirectory) } ?? trust
            var managers: [Manager] = []
            for _ in 0..<clients {
                if overUnixSocket, let path = server?.unixSocketPath {
                    managers.append(try await Manager.connect(unixSocket: path, authKey: key, eventLoopGroup: group, busyPoll: .microseconds(busyPollUs)))
                } else {
                    managers.append(
                        try await Manager.connect(
                            host: host, port: port, authKey: key, trust: trust, eventLoopGroup: group, busyPoll: .microseconds(busyPollUs)))
                }
            }
            let cpuBefore = server?.cpuSeconds() ?? 0
            let clientCPUBefore = processCPUSeconds(getpid())
            let result =
                blockingFace
                ? try await ClientLoad.blockingDictSetGet(managers: managers, seconds: seconds)
                : try await ClientLoad.run(
                    workload: workload, managers: managers, seconds: seconds, contended: contended, onEventLoops: !globalExecutor)
            let clientCPU = processCPUSeconds(getpid()) - clientCPUBefore
            let serverCPU = (server?.cpuSeconds() ?? 0) - cpuBefore
            for manager in managers { await manager.close() }
            return (result, serverCPU, clientCPU)
        }
        let (result, serverCPU, clientCPU) = try await measure(overUnixSocket: unix)

        var report: [String: Any] = [
            "benchmark": "manager", "workload": workload, "clients": clients, "tls": !plaintext && !unix, "transport": unix ? "unix" : "tcp", "seconds": seconds,
            "server_threads": serverThreads, "client_threads": clientThreads, "persist": persist, "metrics": metrics, "busy_poll_us": busyPollUs, "client_tasks_on": blockingFace ? "threads (blocking face)" : globalExecutor ? "global executor" : "event loop", "unit": ClientLoad.unit(workload),
            "ops_per_s": result.opsPerSecond, "p50_us": result.percentile(0.5), "p99_us": result.percentile(0.99),
        ]
        if server != nil { report["server_cpu_us_per_op"] = serverCPU * 1e6 / Double(max(result.operations, 1)) }
        // The clients share the machine with the manager: their CPU per operation is the other
        // half of what bounds throughput on a small machine.
        report["client_cpu_us_per_op"] = clientCPU * 1e6 / Double(max(result.operations, 1))
        if workload == "lock_acquire_release" { report["contended"] = contended }
        if compare {
            var references: [String: Any] = [:]
            references["raw_tcp_ping_pong_round_trips_per_s"] = PingPongFloor.measure(seconds: min(seconds, 2))
            references["raw_tcp_ping_pong_busy_poll_round_trips_per_s"] = PingPongFloor.measure(seconds: min(seconds, 2), busyPolling: true)
            if persist != "off" {
                // The same clients against a manager that keeps nothing: what persistence costs.
                let bare = try SpawnedManager(plaintext: plaintext, threads: serverThreads, busyPollMicroseconds: busyPollUs)
                defer { bare.stop() }
                references["colony_without_persistence_ops_per_s"] = try await measure(overUnixSocket: false, against: bare).0.opsPerSecond
            }
            if metrics {
                // The same clients against a manager that counts nothing: what metrics cost.
                let bare = try SpawnedManager(
                    plaintext: plaintext, threads: serverThreads, busyPollMicroseconds: busyPollUs, unixSocket: unix, extraArguments: ["--persist", persist])
                defer { bare.stop() }
                references["colony_without_metrics_ops_per_s"] = try await measure(overUnixSocket: unix, against: bare).0.opsPerSecond
            }
            if ["dict_set_get", "pipeline"].contains(workload) {
                references["redis"] = RedisReference.measure(
                    clients: clients, seconds: seconds, pipeline: workload == "pipeline" ? 100 : 1, appendfsync: persist == "off" ? nil : persist)
                if unix {
                    references["redis_unix"] = RedisReference.measure(
                        clients: clients, seconds: seconds, pipeline: workload == "pipeline" ? 100 : 1, overUnixSocket: true)
                }
            }
            if unix { references["colony_tls_ops_per_s"] = try await measure(overUnixSocket: false).0.opsPerSecond }
            let pythonWorkload: String? =
                switch workload {
                case "dict_set_get", "pipeline": "dict"
                case "queue_put_get", "queue_batch": "queue"
                case "lock_acquire_release": contended ? "lock_contended" : "lock"
                default: nil
                }
            if let pythonWorkload {
                references["cpython_syncmanager"] = CPythonManagerReference.measure(workload: pythonWorkload, clients: clients, seconds: seconds)
            }
            report["compare"] = references
            report["ratio"] = ManagerBench.ratios(result.opsPerSecond, references)
        }
        print(jsonLine(report))
    }

    static func ratios(_ ours: Double, _ references: [String: Any]) -> [String: Double] {
        var ratios: [String: Double] = [:]
        if let floor = references["raw_tcp_ping_pong_round_trips_per_s"] as? Double, floor > 0 {
            ratios["vs_raw_ping_pong"] = ours / floor
        }
        if let floor = references["raw_tcp_ping_pong_busy_poll_round_trips_per_s"] as? Double, floor > 0 {
            ratios["vs_raw_ping_pong_busy_poll"] = ours / floor
        }
        if let redis = references["redis"] as? [String: Any], let ops = redis["ops_per_s"] as? Double, ops > 0 {
            ratios["vs_redis_tls"] = ours / ops
        }
        if let redis = references["redis_unix"] as? [String: Any], let ops = redis["ops_per_s"] as? Double, ops > 0 {
            ratios["vs_redis_unix"] = ours / ops
        }
        if let tls = references["colony_tls_ops_per_s"] as? Double, tls > 0 {
            ratios["vs_colony_tls"] = ours / tls
        }
        if let bare = references["colony_without_persistence_ops_per_s"] as? Double, bare > 0 {
            ratios["vs_colony_without_persistence"] = ours / bare
        }
        if let bare = references["colony_without_metrics_ops_per_s"] as? Double, bare > 0 {
            ratios["vs_colony_without_metrics"] = ours / bare
        }
        if let python = references["cpython_syncmanager"] as? [String: Any], let ops = python["ops_per_s"] as? Double, ops > 0 {
            ratios["vs_cpython"] = ours / ops
        }
        return ratios
    }
}

/// Closed-loop clients: each connection issues one request after the other.
enum ClientLoad {
    struct Result {
        var operations: Int
        var opsPerSecond: Double
        var latencies: [Double]
        func percentile(_ q: Double) -> Double { colony_bench.percentile(latencies, q) }
    }

    /// What one operation is in a workload's figures.
    static func unit(_ workload: String) -> String {
        switch workload {
        case "queue_put_get": "a put or a get of one item"
        case "queue_batch": "an item moved (put_many and get_many of 100)"
        case "lock_acquire_release": "an acquire or a release"
        case "event_ping_pong": "a round trip between two clients (set, then the other's wait returns)"
        case "pipeline": "a request"
        default: "a request"
        }
    }

    static func run(workload: String, managers: [Manager], seconds: Double, contended: Bool, onEventLoops: Bool) async throws -> Result {
        switch workload {
        case "queue_put_get", "queue_batch", "event_ping_pong":
            if managers.count >= 2 { return try await pairs(workload, managers: managers, seconds: seconds, onEventLoops: onEventLoops) }
        default:
            break
        }
        let start = Date()
        let deadline = start.addingTimeInterval(seconds)
        let perClient = try await withThrowingTaskGroup(of: (Int, [Double]).self) { group in
            for (index, manager) in managers.enumerated() {
                // Each client's task runs on its connection's event loop: no thread hand-offs.
                group.addTask(executorPreference: onEventLoops ? manager.executor : globalConcurrentExecutor) {
                    try await drive(workload, manager, index, deadline, contended: contended)
                }
            }
            var all: [(Int, [Double])] = []
            for try await result in group { all.append(result) }
            return all
        }
        let elapsed = Date().timeIntervalSince(start)
        let operations = perClient.reduce(0) { $0 + $1.0 }
        return Result(operations: operations, opsPerSecond: Double(operations) / elapsed, latencies: perClient.flatMap(\.1))
    }

    /// Counts operations and samples their latency (µs per operation).
    /// A class, so that timing an operation holds no exclusive access across its awaits.
    final class Recorder {
        private var operations = 0
        private var latencies: [Double] = []

        func timed(_ count: Int, _ body: () async throws -> Void) async rethrows {
            let begin = DispatchTime.now().uptimeNanoseconds
            try await body()
            record(count, since: begin)
        }

        /// The same for code on a plain thread.
        func timedBlocking(_ count: Int, _ body: () throws -> Void) rethrows {
            let begin = DispatchTime.now().uptimeNanoseconds
            try body()
            record(count, since: begin)
        }

        private func record(_ count: Int, since begin: UInt64) {
            let micros = Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e3
            if latencies.count < 200_000 { latencies.append(micros / Double(count)) }
            operations += count
        }

        var result: (Int, [Double]) { (operations, latencies) }
    }

    /// Returns (operations, sampled latencies in µs).
    static func drive(_ workload: String, _ manager: Manager, _ index: Int, _ deadline: Date, contended: Bool) async throws -> (Int, [Double]) {
        let recorder = Recorder()
        func timed(_ count: Int, _ body: () async throws -> Void) async rethrows { try await recorder.timed(count, body) }
        switch workload {
        case "dict_set_get":
            let d = try await manager.dict("bench-dict", String.self, Int.self)
            let key = "client-\(index)"
            var i = 0
            while Date() < deadline {
                try await timed(1) { try await d.set(key, i) }
                try await timed(1) { _ = try await d.get(key) }
                i += 1
            }
        case "list_append_pop":
            let l = try await manager.list(nil, Int.self)
            var i = 0
            while Date() < deadline {
                try await timed(1) { try await l.append(i) }
                try await timed(1) { _ = try await l.pop() }
                i += 1
            }
        case "value_increment":
            let v = try await manager.value("bench-value", typecode: "q", 0)
            while Date() < deadline { try await timed(1) { _ = try await v.increment(by: 1) } }
        case "queue_put_get":  // one connection: put, then get
            let q = try await manager.queue("bench-queue-\(index)", Int.self)
            var i = 0
            while Date() < deadline {
                try await timed(1) { try await q.put(i) }
                try await timed(1) { _ = try await q.get() }
                i += 1
            }
        case "queue_batch":
            let q = try await manager.queue("bench-queue-\(index)", Int.self)
            let batch = Array(0..<100)
            while Date() < deadline {
                try await timed(100) { try await q.put(contentsOf: batch) }
                try await timed(100) { _ = try await q.get(upTo: 100) }
            }
        case "lock_acquire_release":
            let lock = try await manager.lock(contended ? "bench-lock" : "bench-lock-\(index)")
            while Date() < deadline {
                try await timed(1) { try await lock.acquire() }
                try await timed(1) { try await lock.release() }
            }
        case "event_ping_pong":  // one connection plays both sides
            let (ping, pong) = (try await manager.event("bench-ping-\(index)"), try await manager.event("bench-pong-\(index)"))
            let answering = Task {
                while true {
                    guard try await ping.wait(timeout: 1) else { if Date() >= deadline { return } else { continue } }
                    try await ping.clear()
                    try await pong.set()
                }
            }
            while Date() < deadline {
                try await timed(1) {
                    try await ping.set()
                    try await pong.wait()
                    try await pong.clear()
                }
            }
            try await answering.value
        default:  // pipeline: 100 requests in flight on one connection, then the next 100
            let d = try await manager.dict("bench-dict", String.self, Int.self)
            let requests = (0..<100).map { i in
                i % 2 == 0 ? DictCall.setItem(.string("p\(index)-\(i)"), .integer(i)).request(object: d.reference.id)
                    : DictCall.getItem(.string("p\(index)-\(i - 1)")).request(object: d.reference.id)
            }
            while Date() < deadline {
                if workload == "batch" {
                    try await timed(100) { _ = try await manager.batch(requests) }
                } else {
                    try await timed(100) { _ = try await manager.pipeline(requests) }
                }
            }
        }
        return recorder.result
    }
}

extension ClientLoad {
    /// dict set/get from plain threads through the blocking face, one thread per connection.
    static func blockingDictSetGet(managers: [Manager], seconds: Double) async throws -> Result {
        var dicts: [DictProxy<String, Int>] = []
        for manager in managers { dicts.append(try await manager.dict("bench-dict", String.self, Int.self)) }
        let start = Date()
        let deadline = start.addingTimeInterval(seconds)
        let results = Threading.Lock()
        nonisolated(unsafe) var perClient: [(Int, [Double])] = []
        let threads = dicts.enumerated().map { index, d in
            Colony.Thread(name: "bench-client-\(index)") {
                let recorder = Recorder()
                let key = "client-\(index)"
                var i = 0
                while Date() < deadline {
                    try recorder.timedBlocking(1) { try d.set(key, i) }
                    try recorder.timedBlocking(1) { _ = try d.get(key) }
                    i += 1
                }
                results.withLock { perClient.append(recorder.result) }
            }
        }
        for thread in threads { try thread.start() }
        for thread in threads { _ = try thread.join(timeout: seconds + 30) }
        let elapsed = Date().timeIntervalSince(start)
        let all = results.withLock { perClient }
        let operations = all.reduce(0) { $0 + $1.0 }
        return Result(operations: operations, opsPerSecond: Double(operations) / elapsed, latencies: all.flatMap(\.1))
    }

    /// Producer/consumer workloads with at least two connections: the first half produce
    /// (put, set), the second half consume (get, wait), each on its own connection.
    static func pairs(_ workload: String, managers: [Manager], seconds: Double, onEventLoops: Bool) async throws -> Result {
        let start = Date()
        let deadline = start.addingTimeInterval(seconds)
        let half = managers.count / 2
        let perClient = try await withThrowingTaskGroup(of: (Int, [Double]).self) { group in
            for (index, manager) in managers.prefix(2 * half).enumerated() {
                let pair = index % half
                let producing = index < half
                group.addTask(executorPreference: onEventLoops ? manager.executor : globalConcurrentExecutor) {
                    try await pairSide(workload, manager, pair: pair, producing: producing, deadline: deadline)
                }
            }
            var all: [(Int, [Double])] = []
            for try await result in group { all.append(result) }
            return all
        }
        let elapsed = Date().timeIntervalSince(start)
        let operations = perClient.reduce(0) { $0 + $1.0 }
        return Result(operations: operations, opsPerSecond: Double(operations) / elapsed, latencies: perClient.flatMap(\.1))
    }

    static func pairSide(_ workload: String, _ manager: Manager, pair: Int, producing: Bool, deadline: Date) async throws -> (Int, [Double]) {
        let recorder = Recorder()
        func timed(_ count: Int, _ body: () async throws -> Void) async rethrows { try await recorder.timed(count, body) }
        switch workload {
        case "event_ping_pong":
            // Round trips: the producer sets ping and waits for pong; the consumer answers.
            let (ping, pong) = (try await manager.event("bench-ping-\(pair)"), try await manager.event("bench-pong-\(pair)"))
            if producing {
                while Date() < deadline {
                    try await timed(1) {
                        try await ping.set()
                        try await pong.wait()
                        try await pong.clear()
                    }
                }
                try await ping.set()  // lets the other side see the deadline
                return recorder.result
            }
            while Date() < deadline {
                guard try await ping.wait(timeout: 1) else { continue }
                try await ping.clear()
                try await pong.set()
            }
            return (0, [])
        default:
            let batch = workload == "queue_batch" ? 100 : 1
            let queue = try await manager.queue("bench-pairs-\(pair)", Int.self, maxsize: 100 * batch)
            let items = Array(0..<batch)
            while Date() < deadline {
                do {
                    if producing {
                        try await timed(batch) { batch == 1 ? try await queue.put(0, timeout: 0.5) : try await queue.put(contentsOf: items, timeout: 0.5) }
                    } else {
                        try await timed(batch) { _ = batch == 1 ? [try await queue.get(timeout: 0.5)] : try await queue.get(upTo: batch, timeout: 0.5) }
                    }
                } catch is QueueFull {
                } catch is QueueEmpty {
                }
            }
            return recorder.result
        }
    }
}

/// A `colony manager` started for the benchmark from the executable next to this one.
final class SpawnedManager {
    let process = Process()
    let stateDirectory: String
    let port: Int
    /// Its Unix domain socket, when started with one.
    let unixSocketPath: String?

    init(plaintext: Bool, threads: Int, busyPollMicroseconds: Int, unixSocket: Bool = false, extraArguments: [String] = []) throws {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("colony")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw ValidationError("\(executable.path) is missing: build it too (swift build -c release)")
        }
        stateDirectory = NSTemporaryDirectory() + "colony-bench-\(UUID().uuidString)"
        let portFile = stateDirectory + "/port"
        unixSocketPath = unixSocket ? stateDirectory + "/manager.sock" : nil
        process.executableURL = executable
        process.arguments = ["manager", "--port", "0", "--state-dir", stateDirectory, "--port-file", portFile,
                             "--event-loop-threads", String(threads), "--busy-poll-us", String(busyPollMicroseconds), "--log-level", "warning"] + (plaintext ? ["--insecure-plaintext"] : [])
            + (unixSocketPath.map { ["--unix", $0] } ?? []) + extraArguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var found: Int?
        for _ in 0..<300 where found == nil {
            found = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if found == nil { usleep(100_000) }
        }
        guard let found else {
            process.terminate()
            throw ValidationError("the manager did not start")
        }
        port = found
    }

    /// User plus system CPU seconds the manager has used so far.
    func cpuSeconds() -> Double { processCPUSeconds(process.processIdentifier) }

    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: stateDirectory)
    }
}
