/// The messages between the manager and worker nodes of the distributed pool (SPEC.md,
/// "Worker nodes"). Each is one frame whose body is a map; `frame()` builds it and
/// `init(frame:)` parses and checks it.
public protocol PoolMessage: Hashable, Sendable {
    static var kind: FrameKind { get }
    var wireValue: WireValue { get }
    init(wireValue: WireValue) throws
}

extension PoolMessage {
    public func frame(requestID: UInt64 = 0) -> Frame { Frame(kind: Self.kind, requestID: requestID, value: wireValue) }

    public init(frame: Frame) throws {
        guard frame.kind == Self.kind else {
            throw WireFormatError(.malformedMessage, "expected a \(Self.kind) frame, got \(frame.kind)")
        }
        try self.init(wireValue: try frame.value())
    }
}

private func field<T>(_ map: WireValue, _ key: String, _ kind: FrameKind, _ convert: (WireValue) -> T?) throws -> T {
    guard let value = map[key], let converted = convert(value) else {
        throw WireFormatError(.malformedMessage, "a \(kind) message needs a valid '\(key)'")
    }
    return converted
}

/// Worker → manager, first frame after the handshake: who the node is, which pool it joins,
/// how many assignments it holds at once, how many processes run them, which named task
/// functions it registered, and how often it sends heartbeats.
public struct WorkerHello: PoolMessage {
    public static let kind = FrameKind.workerHello
    public var node: String
    public var capacity: Int
    public var tasks: [String]
    public var pid: Int
    /// The named pool to join ("default" when absent).
    public var pool: String
    /// Processes (or threads) running the assignments; Python's automatic chunk size counts
    /// these. Defaults to `capacity`.
    public var processes: Int
    /// Seconds between heartbeats; three silent intervals lose the worker. Default 5.
    public var heartbeatSeconds: Double

    public static let defaultPool = "default"

    public init(
        node: String, capacity: Int, tasks: [String], pid: Int, pool: String = WorkerHello.defaultPool, processes: Int? = nil,
        heartbeatSeconds: Double = 5
    ) {
        self.node = node
        self.capacity = capacity
        self.tasks = tasks
        self.pid = pid
        self.pool = pool
        self.processes = processes ?? capacity
        self.heartbeatSeconds = heartbeatSeconds
    }

    public var wireValue: WireValue {
        [
            "node": .string(node), "capacity": .integer(capacity), "tasks": .array(tasks.map(WireValue.string)), "pid": .integer(pid),
            "pool": .string(pool), "processes": .integer(processes), "heartbeat": .double(heartbeatSeconds),
        ]
    }

    public init(wireValue: WireValue) throws {
        node = try field(wireValue, "node", Self.kind, \.stringValue)
        capacity = try field(wireValue, "capacity", Self.kind) { $0.int64Value.flatMap(Int.init(exactly:)).flatMap { $0 > 0 ? $0 : nil } }
        tasks = try field(wireValue, "tasks", Self.kind) { value in
            value.arrayValue.flatMap { names in
                let strings = names.compactMap(\.stringValue)
                return strings.count == names.count ? strings : nil
            }
        }
        pid = try field(wireValue, "pid", Self.kind) { $0.int64Value.flatMap(Int.init(exactly:)) }
        pool = wireValue["pool"] == nil ? Self.defaultPool : try field(wireValue, "pool", Self.kind, \.stringValue)
        processes = wireValue["processes"] == nil
            ? capacity : try field(wireValue, "processes", Self.kind) { $0.int64Value.flatMap(Int.init(exactly:)).flatMap { $0 > 0 ? $0 : nil } }
        heartbeatSeconds = wireValue["heartbeat"] == nil
            ? 5 : try field(wireValue, "heartbeat", Self.kind) { $0.doubleValue.flatMap { $0 > 0 && $0 <= 3600 ? $0 : nil } }
    }
}

/// Manager → worker: run `task` once per call in `calls` (a chunk), as attempt `attempt`.
/// A call is its one argument, or with `starred` (Python's `starmap`) its argument list. The
/// frame's request id is the assignment id that the answer repeats.
public struct TaskAssignment: PoolMessage {
    public static let kind = FrameKind.taskAssign
    public var task: String
    public var calls: [WireValue]
    public var starred: Bool
    public var attempt: Int

    public init(task: String, calls: [WireValue], starred: Bool = false, attempt: Int) {
        self.task = task
        self.calls = calls
        self.starred = starred
        self.attempt = attempt
    }

    public var wireValue: WireValue { Self.body(task: task, calls: calls, starred: starred, attempt: attempt) }

    public static func body(task: String, calls: [WireValue], starred: Bool, attempt: Int) -> WireValue {
        ["task": .string(task), "calls": .array(calls), "starred": .bool(starred), "attempt": .integer(attempt)]
    }

    /// Call `index`'s arguments.
    public func arguments(_ index: Int) -> TaskArguments {
        starred ? .list(calls[index].arrayValue ?? [calls[index]]) : .single(calls[index])
    }

    public init(wireValue: WireValue) throws {
        task = try field(wireValue, "task", Self.kind, \.stringValue)
        starred = wireValue["starred"]?.boolValue ?? true
        let starred = self.starred
        calls = try field(wireValue, "calls", Self.kind) { value in
            value.arrayValue.flatMap { calls in !starred || calls.allSatisfy({ $0.arrayValue != nil }) ? calls : nil }
        }
        attempt = try field(wireValue, "attempt", Self.kind) { $0.int64Value.flatMap(Int.init(exactly:)) }
    }
}

/// One call's positional arguments: its single argument, or an argument list (`starmap`).
public enum TaskArguments: Sendable, Hashable {
    case single(WireValue)
    case list([WireValue])
}

/// Worker → manager: every call of an assignment succeeded; `results` in call order.
public struct TaskResult: PoolMessage {
    public static let kind = FrameKind.taskResult
    public var results: [WireValue]

    public init(results: [WireValue]) { self.results = results }

    public var wireValue: WireValue { ["results": .array(results)] }

    public init(wireValue: WireValue) throws {
        results = try field(wireValue, "results", Self.kind, \.arrayValue)
    }
}

/// Worker → manager: call `index` of an assignment threw, or (`lost`) the process running it
/// died or was stopped. `results` holds the results of the calls before it; the calls after
/// it were not run. A thrown error is the task's own, so the manager does not retry that call;
/// a lost one runs again with one more attempt.
public struct TaskFailure: PoolMessage {
    public static let kind = FrameKind.taskFailure
    public var index: Int
    public var results: [WireValue]
    /// The Swift type of the error, for the caller's message.
    public var errorType: String
    public var message: String
    /// The process running call `index` died (or was stopped): not the task's own error.
    public var lost: Bool

    public init(index: Int, results: [WireValue], errorType: String, message: String, lost: Bool = false) {
        self.index = index
        self.results = results
        self.errorType = errorType
        self.message = message
        self.lost = lost
    }

    public var wireValue: WireValue {
        var map: WireValue = ["index": .integer(index), "results": .array(results), "type": .string(errorType), "message": .string(message)]
        if lost { map = .map((map.mapValue ?? []) + [WirePair("lost", true)]) }
        return map
    }

    public init(wireValue: WireValue) throws {
        index = try field(wireValue, "index", Self.kind) { $0.int64Value.flatMap(Int.init(exactly:)) }
        results = try field(wireValue, "results", Self.kind, \.arrayValue)
        errorType = try field(wireValue, "type", Self.kind, \.stringValue)
        message = try field(wireValue, "message", Self.kind, \.stringValue)
        lost = wireValue["lost"]?.boolValue ?? false
    }
}

/// Worker → manager, every few seconds: it is alive and how busy it is.
public struct Heartbeat: PoolMessage {
    public static let kind = FrameKind.heartbeat
    public var busy: Int
    public var capacity: Int

    public init(busy: Int, capacity: Int) {
        self.busy = busy
        self.capacity = capacity
    }

    public var wireValue: WireValue { ["busy": .integer(busy), "capacity": .integer(capacity)] }

    public init(wireValue: WireValue) throws {
        busy = try field(wireValue, "busy", Self.kind) { $0.int64Value.flatMap(Int.init(exactly:)) }
        capacity = try field(wireValue, "capacity", Self.kind) { $0.int64Value.flatMap(Int.init(exactly:)) }
    }
}

/// Either direction: the worker takes no new assignments, finishes the ones it has, then
/// says goodbye. From the manager it is an order; from a worker, a notice that it is leaving.
public struct Drain: PoolMessage {
    public static let kind = FrameKind.drain
    public var reason: String

    public init(reason: String) { self.reason = reason }

    public var wireValue: WireValue { ["reason": .string(reason)] }

    public init(wireValue: WireValue) throws {
        reason = try field(wireValue, "reason", Self.kind, \.stringValue)
    }
}
