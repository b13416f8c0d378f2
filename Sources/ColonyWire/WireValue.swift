/// A value as it travels on the wire: the data model every Colony message is made of
/// (Protocol/SPEC.md, "Values"). No code ever travels, only these.
///
/// Integers decode to `.int` whenever they fit in `Int64` and to `.uint` only above
/// `Int64.max`, so each number has one representation and `==` compares numbers.
public enum WireValue: Hashable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case bytes([UInt8])
    case array([WireValue])
    /// Keys and values in wire order. Keys may be any value; encoders should not repeat one.
    case map([WirePair])
    /// A reference to a shared object on the manager (MessagePack extension type 1).
    case objectRef(ObjectRef)

    /// An integer in its canonical case: `.int` when it fits in `Int64`, else `.uint`.
    public static func integer<T: BinaryInteger>(_ value: T) -> WireValue {
        if let signed = Int64(exactly: value) { return .int(signed) }
        return .uint(UInt64(value))
    }
}

/// One entry of a `WireValue.map`.
public struct WirePair: Hashable, Sendable {
    public var key: WireValue
    public var value: WireValue

    public init(_ key: WireValue, _ value: WireValue) {
        self.key = key
        self.value = value
    }
}

/// A reference to a shared object held by a manager: its type and its id, unique for the
/// manager's lifetime. Sent as MessagePack extension type 1 (SPEC.md, "Object references").
public struct ObjectRef: Hashable, Sendable, CustomStringConvertible {
    public var type: ObjectType
    public var id: UInt64

    public init(type: ObjectType, id: UInt64) {
        self.type = type
        self.id = id
    }

    public var description: String { "<\(type) #\(id)>" }
}

/// The kinds of shared object a manager holds, with their one-byte wire codes.
public struct ObjectType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let dict = ObjectType(rawValue: 1)
    public static let list = ObjectType(rawValue: 2)
    public static let namespace = ObjectType(rawValue: 3)
    public static let value = ObjectType(rawValue: 4)
    public static let array = ObjectType(rawValue: 5)
    public static let queue = ObjectType(rawValue: 6)
    public static let joinableQueue = ObjectType(rawValue: 7)
    public static let lifoQueue = ObjectType(rawValue: 8)
    public static let priorityQueue = ObjectType(rawValue: 9)
    public static let lock = ObjectType(rawValue: 10)
    public static let rlock = ObjectType(rawValue: 11)
    public static let semaphore = ObjectType(rawValue: 12)
    public static let boundedSemaphore = ObjectType(rawValue: 13)
    public static let condition = ObjectType(rawValue: 14)
    public static let event = ObjectType(rawValue: 15)
    public static let barrier = ObjectType(rawValue: 16)
    public static let pool = ObjectType(rawValue: 17)
    public static let set = ObjectType(rawValue: 18)

    /// Every type of this protocol version, in code order.
    public static let all: [ObjectType] = [
        .dict, .list, .namespace, .value, .array, .queue, .joinableQueue, .lifoQueue, .priorityQueue,
        .lock, .rlock, .semaphore, .boundedSemaphore, .condition, .event, .barrier, .pool, .set,
    ]

    /// The name used in messages and in `colony status`.
    public var name: String {
        switch self {
        case .dict: "dict"
        case .list: "list"
        case .namespace: "namespace"
        case .value: "value"
        case .array: "array"
        case .queue: "queue"
        case .joinableQueue: "joinable_queue"
        case .lifoQueue: "lifo_queue"
        case .priorityQueue: "priority_queue"
        case .lock: "lock"
        case .rlock: "rlock"
        case .semaphore: "semaphore"
        case .boundedSemaphore: "bounded_semaphore"
        case .condition: "condition"
        case .event: "event"
        case .barrier: "barrier"
        case .pool: "pool"
        case .set: "set"
        default: "type-\(rawValue)"
        }
    }

    /// The type with this name, if any.
    public init?(name: String) {
        guard let match = ObjectType.all.first(where: { $0.name == name }) else { return nil }
        self = match
    }

    public var description: String { name }
}

// MARK: - Literals and accessors

extension WireValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: WireValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (WireValue, WireValue)...) {
        self = .map(elements.map { WirePair($0.0, $0.1) })
    }
}

extension WireValue {
    public var isNull: Bool { self == .null }

    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The value as `Int64`, from either integer case when it fits.
    public var int64Value: Int64? {
        switch self {
        case .int(let value): value
        case .uint(let value): Int64(exactly: value)
        default: nil
        }
    }

    /// The value as `UInt64`, from either integer case when it fits.
    public var uint64Value: UInt64? {
        switch self {
        case .int(let value): UInt64(exactly: value)
        case .uint(let value): value
        default: nil
        }
    }

    /// The value as `Double`; integers convert.
    public var doubleValue: Double? {
        switch self {
        case .double(let value): value
        case .int(let value): Double(value)
        case .uint(let value): Double(value)
        default: nil
        }
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var bytesValue: [UInt8]? {
        if case .bytes(let value) = self { return value }
        return nil
    }

    public var arrayValue: [WireValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    public var mapValue: [WirePair]? {
        if case .map(let value) = self { return value }
        return nil
    }

    public var objectRefValue: ObjectRef? {
        if case .objectRef(let value) = self { return value }
        return nil
    }

    /// The value of the first entry of a map whose key is the string `key`.
    public subscript(key: String) -> WireValue? {
        guard case .map(let pairs) = self else { return nil }
        return pairs.first { $0.key == .string(key) }?.value
    }
}

/// This release of Colony, sent as the agent in handshakes and shown by `colony status`.
public let colonyReleaseVersion = "0.1.0"

extension WireValue {
    /// Whether this value can hold an object reference (only references and containers can).
    public var mayContainReferences: Bool {
        switch self {
        case .objectRef, .array, .map: true
        default: false
        }
    }

    /// The id of every object reference inside this value, once per occurrence.
    public var objectIDs: [UInt64] {
        var ids: [UInt64] = []
        collectObjectIDs(into: &ids)
        return ids
    }

    /// Appends the id of every object reference inside this value, once per occurrence.
    public func collectObjectIDs(into ids: inout [UInt64]) {
        switch self {
        case .objectRef(let reference): ids.append(reference.id)
        case .array(let elements): for element in elements where element.mayContainReferences { element.collectObjectIDs(into: &ids) }
        case .map(let pairs):
            for pair in pairs {
                if pair.key.mayContainReferences { pair.key.collectObjectIDs(into: &ids) }
                if pair.value.mayContainReferences { pair.value.collectObjectIDs(into: &ids) }
            }
        default: break
        }
    }
}
