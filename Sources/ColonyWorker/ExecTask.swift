import Colony
import Foundation
import Subprocess
import SystemPackage
import Threading

/// The stock `exec` task: runs a command on the worker node through swift-subprocess
/// (Python's `subprocess.run` as a pool task).
public enum ExecTask {
    public static let task = PoolTask<ExecRequest, ExecResult>("exec")

    /// The most standard output and error `exec` collects (each); more is an error.
    public static let outputLimit = 16 << 20

    static func run(_ request: ExecRequest) throws -> ExecResult {
        guard let program = request.command.first else { throw TaskError("exec needs a command: [program, arguments...]") }
        let executable: Executable = program.contains("/") ? .path(FilePath(program)) : .name(program)
        var environment: Environment = .inherit
        if let extra = request.environment {
            var updates: [Environment.Key: String?] = [:]
            for (name, value) in extra {
                guard let key = Environment.Key(rawValue: name) else { throw TaskError("exec: '\(name)' is not a valid environment variable name") }
                updates[key] = value
            }
            environment = environment.updating(updates)
        }
        let workingDirectory = request.workingDirectory.map { FilePath($0) }
        let input = request.standardInput ?? ""
        let outcome = Future<ExecResult>()
        let running = Task {
            do {
                let result = try await Subprocess.run(
                    executable, arguments: Arguments(Array(request.command.dropFirst())), environment: environment,
                    workingDirectory: workingDirectory, input: .string(input), output: .string(limit: outputLimit),
                    error: .string(limit: outputLimit))
                let status: Int32
                switch result.terminationStatus {
                case .exited(let code): status = code
                case .signaled(let signal): status = -signal
                }
                try outcome.setResult(
                    ExecResult(status: status, standardOutput: result.standardOutput, standardError: result.standardError, timedOut: false))
            } catch {
                try? outcome.setException(error)
            }
        }
        do {
            return try outcome.result(timeout: request.timeout)
        } catch is TimeoutError {
            // Cancelling runs swift-subprocess's teardown: SIGTERM, then SIGKILL.
            running.cancel()
            _ = try? outcome.exception(timeout: 10)
            return ExecResult(status: -SIGKILL, standardOutput: "", standardError: "", timedOut: true)
        }
    }
}

/// What `exec` runs: `command` is the program (a path, or a name looked up in PATH) then its
/// arguments; `environment` adds to the worker's; `timeout` in seconds stops it.
public struct ExecRequest: Codable, Sendable, Hashable {
    public var command: [String]
    public var environment: [String: String]?
    public var workingDirectory: String?
    public var standardInput: String?
    public var timeout: Double?

    public init(
        _ command: [String], environment: [String: String]? = nil, workingDirectory: String? = nil, standardInput: String? = nil,
        timeout: Double? = nil
    ) {
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.standardInput = standardInput
        self.timeout = timeout
    }
}

/// What `exec` returns: the exit status (minus the signal number if a signal ended it), the
/// collected standard output and error, and whether the timeout stopped it.
public struct ExecResult: Codable, Sendable, Hashable {
    public var status: Int32
    public var standardOutput: String
    public var standardError: String
    public var timedOut: Bool
}
