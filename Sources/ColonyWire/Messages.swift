import NIOCore

/// The error codes of error frames (SPEC.md, "Error codes"). Each maps to a typed Swift
/// error on the client, and to the Python exception named in `pythonName`.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let badRequest = ErrorCode(rawValue: 1)
    public static let authFailed = ErrorCode(rawValue: 2)
    public static let unsupported = ErrorCode(rawValue: 3)
    public static let tooLarge = ErrorCode(rawValue: 4)
    public static let versionMismatch = ErrorCode(rawValue: 5)
    public static let noSuchObject = ErrorCode(rawValue: 6)
    public static let wrongType = ErrorCode(rawValue: 7)
    public static let keyError = ErrorCode(rawValue: 8)
    public static let indexError = ErrorCode(rawValue: 9)
    public static let valueError = ErrorCode(rawValue: 10)
    public static let attributeError = ErrorCode(rawValue: 11)
    public static let empty = ErrorCode(rawValue: 12)
    public static let full = ErrorCode(rawValue: 13)
    public static let timeout = ErrorCode(rawValue: 14)
    public static let brokenBarrier = ErrorCode(rawValue: 15)
    public static let notOwner = ErrorCode(rawValue: 16)
    public static let cancelled = ErrorCode(rawValue: 17)
    public static let shutDown = ErrorCode(rawValue: 18)
    public static let limitExceeded = ErrorCode(rawValue: 19)
    public static let taskFailed = ErrorCode(rawValue: 20)
    public static let workerLost = ErrorCode(rawValue: 21)
    public static let noSuchTask = ErrorCode(rawValue: 22)
    public static let internalError = ErrorCode(rawValue: 23)
    public static let outOfMemory = ErrorCode(rawValue: 24)

    public static let all: [ErrorCode] = [
        .badRequest, .authFailed, .unsupported, .tooLarge, .versionMismatch, .noSuchObject, .wrongType, .keyError,
        .indexError, .valueError, .attributeError, .empty, .full, .timeout, .brokenBarrier, .notOwner, .cancelled,
        .shutDown, .limitExceeded, .taskFailed, .workerLost, .noSuchTask, .internalError, .outOfMemory,
    ]

    public var name: String {
        switch self {
        case .badRequest: "BadRequest"
        case .authFailed: "AuthFailed"
        case .unsupported: "Unsupported"
        case .tooLarge: "TooLarge"
        case .versionMismatch: "VersionMismatch"
        case .noSuchObject: "NoSuchObject"
        case .wrongType: "WrongType"
        case .keyError: "KeyError"
        case .indexError: "IndexError"
        case .valueError: "ValueError"
        case .attributeError: "AttributeError"
        case .empty: "Empty"
        case .full: "Full"
        case .timeout: "Timeout"
        case .brokenBarrier: "BrokenBarrier"
        case .notOwner: "NotOwner"
        case .cancelled: "Cancelled"
        case .shutDown: "ShutDown"
        case .limitExceeded: "LimitExceeded"
        case .taskFailed: "TaskFailed"
        case .workerLost: "WorkerLost"
        case .noSuchTask: "NoSuchTask"
        case .internalError: "Internal"
        case .outOfMemory: "OutOfMemory"
        default: "Error\(rawValue)"
        }
    }

    /// The Python exception a SyncManager proxy would raise in the same situation.
    public var pythonName: String {
        switch self {
        case .keyError: "KeyError"
        case .indexError: "IndexError"
        case .valueError, .badRequest: "ValueError"
        case .attributeError: "AttributeError"
        case .empty: "queue.Empty"
        case .full: "queue.Full"
        case .timeout: "TimeoutError"
        case .brokenBarrier: "threading.BrokenBarrierError"
        case .notOwner: "RuntimeError"
        case .authFailed: "multiprocessing.AuthenticationError"
        case .cancelled: "concurrent.futures.CancelledError"
        case .shutDown: "queue.ShutDown"
        case .wrongType: "TypeError"
        case .outOfMemory: "MemoryError"
        default: "RuntimeError"
        }
    }

    public var description: String { name }
}

/// What an error frame says: a code, a human message that says what to do, and optional
/// structured detail (SPEC.md, "Error frames"). Body: `[code, message, detail]`.
public struct RemoteError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public var detail: WireValue

    public init(_ code: ErrorCode, _ message: String, detail: WireValue = .null) {
        self.code = code
        self.message = message
        self.detail = detail
    }

    public var wireValue: WireValue { [.integer(code.rawValue), .string(message), detail] }

    public init(wireValue: WireValue) throws {
        guard case .array(let fields) = wireValue, fields.count == 3,
            let code = fields[0].uint64Value.flatMap(UInt16.init(exactly:)), let message = fields[1].stringValue
        else {
            throw WireFormatError(.malformedMessage, "an error frame body must be [code, message, detail], got \(wireValue)")
        }
        self.init(ErrorCode(rawValue: code), message, detail: fields[2])
    }

    public func frame(requestID: UInt64) -> Frame { Frame(kind: .error, requestID: requestID, value: wireValue) }

    public var description: String { "\(code): \(message)" }
}

/// A request frame's body (SPEC.md, "Requests"): an array whose first element names the
/// operation.
public enum Request: Hashable, Sendable {
    /// `["new", type, name | nil, options]`: creates an object, or opens the named one.
    /// Answer: an object reference.
    case new(type: ObjectType, name: String?, options: WireValue)
    /// `["call", object id, method, args]`: runs a method. Answer: its result.
    case call(object: UInt64, method: String, arguments: [WireValue])
    /// `["release", object id, seen]`: the client dropped its last proxy of the object,
    /// having received it `seen` times since its previous release of it; the session's hold
    /// goes once every transfer was seen (without `seen`, at once). Answer: nil.
    case release(object: UInt64, seen: UInt64?)
    /// `["attach", object id]`: takes a reference to an object another session holds (a
    /// proxy handed to a child process). Answer: its object reference.
    case attach(object: UInt64)
    /// `["delete", name]`: removes a named object for everyone. Answer: whether it existed.
    case delete(name: String)
    /// `["batch", [request...]]`: runs requests in order in one round trip; none may block.
    /// Answer: one `[true, result]` or `[false, error body]` per request.
    case batch([Request])
    /// `["status"]`: the server's objects, sessions and counters. Answer: a map.
    case status

    public var wireValue: WireValue {
        switch self {
        case .new(let type, let name, let options):
            ["new", .string(type.name), name.map(WireValue.string) ?? .null, options]
        case .call(let object, let method, let arguments):
            ["call", .integer(object), .string(method), .array(arguments)]
        case .release(let object, let seen?):
            ["release", .integer(object), .integer(seen)]
        case .release(let object, nil):
            ["release", .integer(object)]
        case .attach(let object):
            ["attach", .integer(object)]
        case .delete(let name):
            ["delete", .string(name)]
        case .batch(let requests):
            ["batch", .array(requests.map(\.wireValue))]
        case .status:
            ["status"]
        }
    }

    /// Parses a request body; anything malformed is a `RemoteError` with code `.badRequest`
    /// (or `.unsupported` for an unknown operation or object type), ready to send back.
    /// Reads a request frame's body: the same result, or error, as decoding the value and
    /// calling `init(wireValue:)`, with a shortcut for the common `call`.
    public init(body: ByteBuffer, limits: WireLimits = .default) throws {
        if let call = body.withUnsafeReadableBytes({ MessagePackReader.call(in: $0, limits: limits) }) {
            self = call
            return
        }
        try self.init(wireValue: try Frame(kind: .request, requestID: 0, body: body).value(limits: limits))
    }

    public init(wireValue: WireValue) throws(RemoteError) {
        guard case .array(let fields) = wireValue, let operation = fields.first?.stringValue else {
            throw RemoteError(.badRequest, "a request must be an array starting with the operation name")
        }
        func argument(_ index: Int) -> WireValue? {
            guard index < fields.count else { return Optional.none }  // a bare nil would be WireValue.null
            return fields[index]
        }
        func require(_ count: Int) throws(RemoteError) {
            guard fields.count == count else {
                throw RemoteError(.badRequest, "'\(operation)' takes \(count - 1) arguments, got \(fields.count - 1)")
            }
        }
        switch operation {
        case "new":
            try require(4)
            guard let typeName = fields[1].stringValue else {
                throw RemoteError(.badRequest, "'new' needs a type name")
            }
            guard let type = ObjectType(name: typeName) else {
                throw RemoteError(.unsupported, "there is no object type '\(typeName)'")
            }
            let name: String?
            switch fields[2] {
            case .null: name = nil
            case .string(let text): name = text
            default: throw RemoteError(.badRequest, "an object name must be a string or nil")
            }
            self = .new(type: type, name: name, options: fields[3])
        case "call":
            try require(4)
            guard let object = fields[1].uint64Value, let method = fields[2].stringValue,
                let arguments = fields[3].arrayValue
            else {
                throw RemoteError(.badRequest, "'call' needs [\"call\", object id, method name, [arguments]]")
            }
            self = .call(object: object, method: method, arguments: arguments)
        case "release":
            guard fields.count == 2 || fields.count == 3 else {
                throw RemoteError(.badRequest, "'release' takes an object id and, optionally, the transfers seen; got \(fields.count - 1) arguments")
            }
            guard let object = argument(1)?.uint64Value else {
                throw RemoteError(.badRequest, "'release' needs an object id")
            }
            var seen: UInt64?
            if let count = argument(2) {
                guard let value = count.uint64Value else {
                    throw RemoteError(.badRequest, "'release' counts the transfers seen with an unsigned integer")
                }
                seen = value
            }
            self = .release(object: object, seen: seen)
        case "attach":
            try require(2)
            guard let object = argument(1)?.uint64Value else {
                throw RemoteError(.badRequest, "'attach' needs an object id")
            }
            self = .attach(object: object)
        case "delete":
            try require(2)
            guard let name = argument(1)?.stringValue else {
                throw RemoteError(.badRequest, "'delete' needs an object name")
            }
            self = .delete(name: name)
        case "batch":
            try require(2)
            guard let elements = argument(1)?.arrayValue else {
                throw RemoteError(.badRequest, "'batch' needs an array of requests")
            }
            var requests: [Request] = []
            requests.reserveCapacity(elements.count)
            for element in elements {
                let request = try Request(wireValue: element)
                if case .batch = request { throw RemoteError(.badRequest, "batches do not nest") }
                requests.append(request)
            }
            self = .batch(requests)
        case "status":
            try require(1)
            self = .status
        default:
            throw RemoteError(.unsupported, "there is no operation '\(operation)'")
        }
    }
}

/// How one request of a batch ended: `[true, result]` or `[false, [code, message, detail]]`.
public enum BatchOutcome: Hashable, Sendable {
    case success(WireValue)
    case failure(RemoteError)

    public var wireValue: WireValue {
        switch self {
        case .success(let value): [true, value]
        case .failure(let error): [false, error.wireValue]
        }
    }

    public init(wireValue: WireValue) throws {
        guard case .array(let fields) = wireValue, fields.count == 2, let ok = fields[0].boolValue else {
            throw WireFormatError(.malformedMessage, "a batch outcome must be [ok, value], got \(wireValue)")
        }
        self = ok ? .success(fields[1]) : .failure(try RemoteError(wireValue: fields[1]))
    }
}
