import Colony
import Foundation
import Testing

/// A real `colony worker` node joined to `manager`. `stop()` (or deinit) terminates and reaps
/// it; its output goes to a file in the manager's state directory.
final class WorkerProcess: @unchecked Sendable {
    let process = Process()
    let logPath: String
    /// Kept alive as long as its worker.
    let manager: ManagerProcess

    /// `connect` is `colony worker --connect`'s value (default: the manager's TCP port).
    init(manager: ManagerProcess, arguments: [String], connect: String? = nil) throws {
        self.manager = manager
        logPath = manager.stateDirectory + "/worker-\(UUID().uuidString).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = buildDirectory.appendingPathComponent("colony")
        process.arguments = ["worker", "--connect", connect ?? "127.0.0.1:\(manager.port)", "--state-dir", manager.stateDirectory] + arguments
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// The process ids of its worker child processes.
    var children: [Int32] { childProcesses(of: pid) }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ number: Int32) { Foundation.kill(pid, number) }

    /// SIGTERM (a drain), then SIGKILL if it has not left within `seconds`. Returns its status.
    @discardableResult
    func stop(within seconds: Double = 10) -> Int32 {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            if process.isRunning { Foundation.kill(pid, SIGKILL) }
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { stop() }
}

/// Waits until the pool has `count` workers (up to 30 s: a worker builds its processes first).
func waitForWorkers(_ pool: Pool, _ count: Int) async throws {
    let joined = try await eventually(30) { try await pool.workers().count >= count }
    try #require(joined, "\(count) worker node(s) did not join the pool")
}

/// A manager, one `colony worker` with `arguments` joined to it, a connected client and its
/// pool: the start of most pool tests.
func startPool(_ arguments: [String], _ name: String = "default", maxAttempts: Int? = nil, orphanGrace: Duration? = nil) async throws
    -> (ManagerProcess, WorkerProcess, Manager, Pool)
{
    let manager = try ManagerProcess()
    let worker = try WorkerProcess(manager: manager, arguments: arguments)
    let client = try await manager.connect()
    let pool = try await client.pool(name, maxAttempts: maxAttempts, orphanGrace: orphanGrace)
    try await waitForWorkers(pool, 1)
    return (manager, worker, client, pool)
}

/// The process ids of the children of process `pid` (Linux: from /proc).
func childProcesses(of pid: Int32) -> [Int32] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return tasks.flatMap { task -> [Int32] in
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { Int32($0) }
    }.sorted()
}

/// The name of process `pid` (Linux: from /proc), nil once it is gone.
func processName(_ pid: Int32) -> String? {
    (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines)
}
