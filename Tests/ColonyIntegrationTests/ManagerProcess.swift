import Colony
import Foundation
import Testing

/// The directory holding the built executables (next to the test bundle).
let buildDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()

/// A real `colony manager` process on an ephemeral loopback port with its own state
/// directory. `stop()` (or deinit) terminates and reaps it.
final class ManagerProcess: @unchecked Sendable {
    let process = Process()
    let stateDirectory: String
    let port: Int
    private let output = Pipe()

    /// `launcher` runs the manager through another command (such as `taskset -c 0`);
    /// `stateDirectory` reuses another manager's (its CA and authkey: a restart).
    init(extraArguments: [String] = [], launcher: [String] = [], stateDirectory reused: String? = nil) throws {
        stateDirectory = reused ?? NSTemporaryDirectory() + "colony-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
        let portFile = stateDirectory + "/port"
        try? FileManager.default.removeItem(atPath: portFile)  // a previous manager's
        let colony = buildDirectory.appendingPathComponent("colony")
        process.executableURL = launcher.first.map { URL(fileURLWithPath: $0) } ?? colony
        process.arguments = launcher.dropFirst() + (launcher.isEmpty ? [] : [colony.path]) + [
            "manager", "--port", "0", "--state-dir", stateDirectory, "--port-file", portFile,
            "--event-loop-threads", "2", "--log-level", "warning",
        ] + extraArguments
        process.standardOutput = output
        process.standardError = output
        try process.run()
        var found: Int?
        for _ in 0..<300 {  // up to 30 s for the first start (certificate generation)
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let value = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                found = value
                break
            }
            guard process.isRunning else { break }
            usleep(100_000)
        }
        guard let found else {
            process.terminate()
            process.waitUntilExit()
            let log = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            throw ConnectionError("colony manager did not start: \(log)")
        }
        port = found
    }

    func connect(authKey: [UInt8]? = nil, trust: ManagerTrust? = nil) async throws -> Manager {
        try await Manager.connect(port: port, authKey: authKey, trust: trust ?? .stateDirectory(path: stateDirectory), timeoutSeconds: 10)
    }

    /// SIGTERM, then SIGKILL if it does not exit within 10 s. Returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning {
            process.terminate()
            for _ in 0..<100 where process.isRunning { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: stateDirectory)
    }
}

/// Polls `condition` every 50 ms for up to `seconds`.
func eventually(_ seconds: Double = 10, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(nanoseconds: 50_000_000)
    }
    return try await condition()
}

extension Result where Failure == any Error {
    /// Runs `body`, keeping its value or its error.
    init(_ body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }

    var failure: (any Error)? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
