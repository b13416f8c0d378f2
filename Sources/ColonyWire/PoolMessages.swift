import NIOCore

/// The messages between the manager and worker nodes of the distributed pool (SPEC.md,
/// "Worker nodes"). Each is one frame whose body is a map; `frame()` builds it and
/// `init(frame:)` parses and checks it.
public protocol PoolMessage: Hashable, Sendable {
    static var kind: FrameKind { get }
    var wireValue: WireValue { get }
    init(wireValue: WireValue) throws
    /// The frame body. Messages that carry calls or results write those from their bytes.
    var body: ByteBuffer { get }
    /// Parses a frame body. Messages that carry calls or results scan those, not decode them.
    init(body: ByteBuffer) throws
}

extension PoolMessage {
    public var body: ByteBuffer { wireValue.encoded() }

    public init(body: ByteBuffer) throws {
        try self.init(wireValue: try Frame(kind: Self.kind, body: body).value())
    }

    public func frame(requestID: UInt64 = 0) -> Frame { Frame(kind: Self.kind, requestID: requestID, body: body) }

    public init(frame: Frame) throws {
        guard frame.kind == Self.kind else {
            throw WireFormatError(.malformedMessage, "expected a \(Self.kind) frame, got \(frame.kind)")
        }
        try self.init(body: frame.body)
    }
}

private func field<T>(_ map: WireValue, _ key: String, _ kind: FrameKind, _ convert: (WireValue) -> T?) throws -> T {
    try field(map[key], key, kind, convert)
}

private func field<T>(_ fields: [String: WireValue], _ key: String, _ kind: FrameKind, _ convert: (WireValue) -> T?) throws -> T {
    try field(fields[key], key, kind, convert)
}

private func field<T>(_ value: WireValue?, _ key: String, _ kind: FrameKind, _ convert: (WireValue) -> T?) throws -> T {
    guard let value, let converted = convert(value) else {
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
    public var calls: EncodedValues
    public var starred: Bool
    public var attempt: Int

    public init(task: String, calls: EncodedValues, starred: Bool = false, attempt: Int) {
        self.task = task
        self.calls = calls
        self.starred = starred
        self.attempt = attempt
    }

    public init(task: String, calls: [WireValue], starred: Bool = false, attempt: Int) {
        self.init(task: task, calls: EncodedValues(calls), starred: starred, attempt: attempt)
    }

    public var wireValue: WireValue {
        ["task": .string(task), "calls": .array(calls.values), "starred": .bool(starred), "attempt": .integer(attempt)]
    }

    public var body: ByteBuffer { TaskAssignment.body(task: task, calls: EncodedValues.Slice(calls), starred: starred, attempt: attempt) }

    /// The body of the assignment of `calls`, written from their bytes where they lie (the
    /// scheduler's job storage): byte for byte the body of the same `TaskAssignment`.
    public static func body(task: String, calls: EncodedValues.Slice, starred: Bool, attempt: Int) -> ByteBuffer {
        var body = ByteBuffer()
        body.writeMap(["task": .string(task), "starred": .bool(starred), "attempt": .integer(attempt)], array: "calls", calls)
        return body
    }

    /// Call `index`'s arguments.
    public func arguments(_ index: Int) -> TaskArguments {
        let call = calls[index]
        return starred ? .list(call.arrayValue ?? [call]) : .single(call)
    }

    public init(wireValue: WireValue) throws {
        try self.init(body: wireValue.encoded())
    }

    public init(body: ByteBuffer) throws {
        let map = try ScannedMap(body, scanning: ["calls"])
        task = try field(map.fields, "task", Self.kind, \.stringValue)
        starred = map.fields["starred"]?.boolValue ?? true
        guard let calls = map.arrays["calls"], !starred || (0..<calls.count).allSatisfy(calls.isArray) else {
            throw WireFormatError(.malformedMessage, "a \(Self.kind) message needs a valid 'calls'")
        }
        self.calls = calls
        attempt = try field(map.fields, "attempt", Self.kind) { $0.int64Value.flatMap(Int.init(exactly:)) }
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
    public var results: EncodedValues

    public init(results: EncodedValues) { self.results = results }
    public init(results: [WireValue]) { self.init(results: EncodedValues(results)) }

    public var wireValue: WireValue { ["results": .array(results.values)] }

    public var body: ByteBuffer {
        var body = ByteBuffer()
        body.writeMap([:], array: "results", results)
        return body
    }

    public init(wireValue: WireValue) throws { try self.init(body: wireValue.encoded()) }

    public init(body: ByteBuffer) throws {
        guard let results = try ScannedMap(body, scanning: ["results"]).arrays["results"] else {
            throw WireFormatError(.malformedMessage, "a \(Self.kind) message needs a valid 'results'")
        }
        self.results = results
    }
}

/// Worker → manager: call `index` of an assignment threw, or (`lost`) the process running it
/// died or was stopped. `results` holds the results of the calls before it; the calls after
/// it were not run. A thrown error is the task's own, so the manager does not retry that call;
/// a lost one runs again with one more attempt.
public struct TaskFailure: PoolMessage {
    public static let kind = FrameKind.taskFailure
    public var index: Int
    public var results: EncodedValues
    /// The Swift type of the error, for the caller's message.
    public var errorType: String
    public var message: String
    /// The process running call `index` died (or was stopped): not the task's own error.
    public var lost: Bool

    public init(index: Int, results: EncodedValues, errorType: String, message: String, lost: Bool = false) {
        self.index = index
        self.results = results
        self.errorType = errorType
        self.message = message
        self.lost = lost
    }

    public init(index: Int, results: [WireValue], errorType: String, message: String, lost: Bool = false) {
        self.init(index: index, results: EncodedValues(results), errorType: errorType, message: message, lost: lost)
    }

    private var otherFields: WireValue {
        var map: WireValue = ["index": .integer(index), "type": .string(errorType), "message": .string(message)]
        if lost { map = .map((map.mapValue ?? []) + [WirePair("lost", true)]) }
        return map
    }

    public var wireValue: WireValue { .map((otherFields.mapValue ?? []) + [WirePair("results", .array(results.values))]) }

    public var body: ByteBuffer {
        var body = ByteBuffer()
        body.writeMap(otherFields, array: "results", results)
        return body
    }

    public init(wireValue: WireValue) throws { try self.init(body: wireValue.encoded()) }

    public init(body: ByteBuffer) throws {
        let map = try ScannedMap(body, scanning: ["results"])
        index = try field(map.fields, "index", Self.kind) { $0.int64Value.flatMap(Int.init(exactly:)) }
        guard let results = map.arrays["results"] else {
            throw WireFormatError(.malformedMessage, "a \(Self.kind) message needs a valid 'results'")
        }
        self.results = results
        errorType = try field(map.fields, "type", Self.kind, \.stringValue)
        message = try field(map.fields, "message", Self.kind, \.stringValue)
        lost = map.fields["lost"]?.boolValue ?? false
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
