import Colony
import ColonyWire
import Crypto
import Foundation

/// The task bodies of a worker program, by name: what `PoolTask` descriptors name on the
/// client side. Build it before `WorkerNode.run`, the same way in every run of the program
/// (worker child processes are the program started again).
public struct TaskRegistry: Sendable {
    /// A body takes the call's arguments and returns its result.
    public typealias Body = @Sendable (TaskArguments) throws -> WireValue

    private(set) var bodies: [String: Body] = [:]
    private(set) var initializers: [String: @Sendable (WireValue) throws -> Void] = [:]

    public init() {}

    /// The task names registered, for the worker-hello.
    public var names: [String] { bodies.keys.sorted() }

    /// Registers the body of `task`. Its `Arguments` decode from the call's one argument, or
    /// from the whole argument list as an array (`starmap`).
    public mutating func register<A, R>(_ task: PoolTask<A, R>, _ body: @escaping @Sendable (A) throws -> R) {
        let name = task.name
        bodies[name] = { arguments in
            try WireValueEncoder().encode(try body(try TaskRegistry.decode(A.self, arguments, task: name)))
        }
    }

    /// Registers a body that takes and returns wire values as they are.
    public mutating func registerRaw(_ name: String, _ body: @escaping Body) {
        bodies[name] = body
    }

    /// Python's Pool `initializer`/`initargs`: a function each worker process (or thread)
    /// runs once before its first task, named so that `colony worker --initializer NAME`
    /// can pick it.
    public mutating func registerInitializer<A: Decodable & Sendable>(_ name: String, _ body: @escaping @Sendable (A) throws -> Void) {
        initializers[name] = { value in try body(try WireValueDecoder().decode(A.self, from: value)) }
    }

    /// Runs one call. Unknown tasks and undecodable arguments throw `TaskError`; the task's
    /// own errors pass through.
    public func run(_ task: String, _ arguments: TaskArguments) throws -> WireValue {
        try body(of: task)(arguments)
    }

    /// The body of `task`, to run many calls of it.
    func body(of task: String) throws -> Body {
        guard let body = bodies[task] else { throw TaskError("this worker has no task named '\(task)'") }
        return body
    }

    func initialize(_ name: String, _ arguments: WireValue) throws {
        guard let body = initializers[name] else { throw TaskError("this worker has no initializer named '\(name)'") }
        try body(arguments)
    }

    static func decode<A: Decodable>(_ type: A.Type, _ arguments: TaskArguments, task: String) throws -> A {
        let decoder = WireValueDecoder()
        let value: WireValue
        switch arguments {
        case .single(let argument):
            value = argument
        case .list(let list):
            if list.count == 1, let single = try? decoder.decode(A.self, from: list[0]) { return single }
            value = .array(list)
        }
        do {
            return try decoder.decode(A.self, from: value)
        } catch {
            throw TaskError("the arguments of task '\(task)' do not decode as \(A.self): \(error)")
        }
    }
}

/// A call that could not run: no such task here, or arguments of the wrong type.
public struct TaskError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension TaskRegistry {
    /// The tasks `colony worker` ships: `echo` (returns its argument), `sleep` (seconds;
    /// returns them), `sha256` (a string; its hex digest), `fail` (throws its message), `pid`
    /// (the process id of the worker process running it), `exit` (a non-zero status ends the
    /// worker process with it, zero returns 0: for crash drills), `getenv` (a variable of the
    /// worker process's environment) and `exec` (runs a command); and the initializer
    /// `setenv`, which sets `{name: value}` in each worker process's environment.
    public static var stock: TaskRegistry {
        var registry = TaskRegistry()
        registry.registerRaw("echo") { arguments in
            switch arguments {
            case .single(let argument): argument
            case .list(let list): list.count == 1 ? list[0] : .array(list)
            }
        }
        registry.register(PoolTask<Double, Double>("sleep")) { seconds in
            Thread.sleep(forTimeInterval: max(0, seconds))
            return seconds
        }
        registry.register(PoolTask<String, String>("sha256")) { text in
            SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined()
        }
        registry.register(PoolTask<String, Bool>("fail")) { message in throw StockTaskFailure(message: message) }
        registry.register(PoolTask<Int32, Int32>("exit")) { status in
            if status != 0 { Foundation.exit(status) }
            return 0
        }
        registry.register(PoolTask<Int, Int32>("pid")) { _ in getpid() }
        registry.register(PoolTask<String, String?>("getenv")) { name in ProcessInfo.processInfo.environment[name] }
        registry.registerInitializer("setenv") { (variables: [String: String]) in
            for (name, value) in variables { setenv(name, value, 1) }
        }
        registry.register(ExecTask.task) { request in try ExecTask.run(request) }
        return registry
    }
}

/// What the stock `fail` task throws.
public struct StockTaskFailure: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
