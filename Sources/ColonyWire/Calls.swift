import NIOCore

/// One typed method call on a shared object: the request it sends and how its answer
/// decodes. Proxies are one line each: `try await session.call(ref, DictCall.getItem(key))`.
public struct ObjectCall<Response: Sendable>: Sendable {
    public let method: String
    public let arguments: [WireValue]
    private let decodeAnswer: @Sendable (WireValue) throws -> Response
    private let decodeBody: (@Sendable (ByteBuffer) throws -> Response)?

    /// `decodeBody`, when given, reads the answer straight from its bytes: for answers with
    /// many values (a pool's results), building a `WireValue` for each would cost more than
    /// the rest of the call.
    public init(
        _ method: String, _ arguments: [WireValue], decode: @escaping @Sendable (WireValue) throws -> Response,
        decodeBody: (@Sendable (ByteBuffer) throws -> Response)? = nil
    ) {
        self.method = method
        self.arguments = arguments
        self.decodeAnswer = decode
        self.decodeBody = decodeBody
    }

    /// The request frame body for the object with id `object`.
    public func request(object: UInt64) -> Request {
        .call(object: object, method: method, arguments: arguments)
    }

    /// Decodes the server's answer; a wrong shape throws `WireFormatError.malformedMessage`.
    public func decode(_ answer: WireValue) throws -> Response { try decodeAnswer(answer) }

    /// Whether the answer is best handed over as its bytes (see `decode(body:)`).
    public var readsBody: Bool { decodeBody != nil }

    /// Decodes the server's answer from its encoded body.
    public func decode(body: ByteBuffer) throws -> Response {
        if let decodeBody { return try decodeBody(body) }
        return try decodeAnswer(try Frame(kind: .response, requestID: 0, body: body).value())
    }
}

/// How answers of each shape decode.
enum Answer {
    static func malformed(_ expected: String, _ answer: WireValue) -> WireFormatError {
        WireFormatError(.malformedMessage, "expected \(expected) in the answer, got \(answer.kindDescription)")
    }

    @Sendable static func value(_ answer: WireValue) -> WireValue { answer }

    @Sendable static func nothing(_ answer: WireValue) throws {
        guard answer == .null else { throw malformed("nil", answer) }
    }

    @Sendable static func bool(_ answer: WireValue) throws -> Bool {
        guard let flag = answer.boolValue else { throw malformed("a bool", answer) }
        return flag
    }

    @Sendable static func int(_ answer: WireValue) throws -> Int {
        guard let number = answer.int64Value.flatMap(Int.init(exactly:)) else { throw malformed("an integer", answer) }
        return number
    }

    @Sendable static func uint(_ answer: WireValue) throws -> UInt64 {
        guard let number = answer.uint64Value else { throw malformed("an unsigned integer", answer) }
        return number
    }

    @Sendable static func array(_ answer: WireValue) throws -> [WireValue] {
        guard let elements = answer.arrayValue else { throw malformed("an array", answer) }
        return elements
    }

    @Sendable static func map(_ answer: WireValue) throws -> [WirePair] {
        guard let pairs = answer.mapValue else { throw malformed("a map", answer) }
        return pairs
    }

    @Sendable static func pair(_ answer: WireValue) throws -> WirePair {
        guard let fields = answer.arrayValue, fields.count == 2 else { throw malformed("a [key, value] pair", answer) }
        return WirePair(fields[0], fields[1])
    }

    @Sendable static func pairs(_ answer: WireValue) throws -> [WirePair] {
        try array(answer).map(pair)
    }

    @Sendable static func reference(_ answer: WireValue) throws -> ObjectRef {
        guard let reference = answer.objectRefValue else { throw malformed("an object reference", answer) }
        return reference
    }
}

/// A timeout argument: seconds, or nil to wait as long as it takes.
func wireTimeout(_ seconds: Double?) -> WireValue { seconds.map(WireValue.double) ?? .null }

/// The typed calls of a shared dict (Python `SyncManager.dict()`).
public enum DictCall {
    public static func getItem(_ key: WireValue) -> ObjectCall<WireValue> { .init("getitem", [key], decode: Answer.value) }
    public static func setItem(_ key: WireValue, _ value: WireValue) -> ObjectCall<Void> {
        .init("setitem", [key, value], decode: Answer.nothing)
    }
    public static func delItem(_ key: WireValue) -> ObjectCall<Void> { .init("delitem", [key], decode: Answer.nothing) }
    public static func contains(_ key: WireValue) -> ObjectCall<Bool> { .init("contains", [key], decode: Answer.bool) }
    public static func len() -> ObjectCall<Int> { .init("len", [], decode: Answer.int) }
    public static func keys() -> ObjectCall<[WireValue]> { .init("keys", [], decode: Answer.array) }
    public static func values() -> ObjectCall<[WireValue]> { .init("values", [], decode: Answer.array) }
    public static func items() -> ObjectCall<[WirePair]> { .init("items", [], decode: Answer.pairs) }
    public static func get(_ key: WireValue, default fallback: WireValue = .null) -> ObjectCall<WireValue> {
        .init("get", [key, fallback], decode: Answer.value)
    }
    /// Without `default`, a missing key is a KeyError.
    public static func pop(_ key: WireValue, default fallback: WireValue? = nil) -> ObjectCall<WireValue> {
        .init("pop", [key] + (fallback.map { [$0] } ?? []), decode: Answer.value)
    }
    public static func popItem() -> ObjectCall<WirePair> { .init("popitem", [], decode: Answer.pair) }
    public static func setDefault(_ key: WireValue, _ fallback: WireValue) -> ObjectCall<WireValue> {
        .init("setdefault", [key, fallback], decode: Answer.value)
    }
    public static func update(_ pairs: [WirePair]) -> ObjectCall<Void> { .init("update", [.map(pairs)], decode: Answer.nothing) }
    public static func clear() -> ObjectCall<Void> { .init("clear", [], decode: Answer.nothing) }
    public static func copy() -> ObjectCall<[WirePair]> { .init("copy", [], decode: Answer.map) }
    /// Python `d | other`: the merged entries, made on the manager.
    public static func or(_ pairs: [WirePair]) -> ObjectCall<[WirePair]> { .init("or", [.map(pairs)], decode: Answer.map) }
    /// Python `d.fromkeys(keys, value)`: a new dict's entries (the shared one is not changed).
    public static func fromKeys(_ keys: [WireValue], value: WireValue) -> ObjectCall<[WirePair]> {
        .init("fromkeys", [.array(keys), value], decode: Answer.map)
    }
    /// Python `reversed(d)`: the keys, last inserted first.
    public static func reversed() -> ObjectCall<[WireValue]> { .init("reversed", [], decode: Answer.array) }
    /// One page of entries: pass nil first, then each answer's cursor until it is nil.
    public static func page(cursor: UInt64?, count: Int) -> ObjectCall<(cursor: UInt64?, items: [WirePair])> {
        .init("page", [cursor.map { .integer($0) } ?? .null, .integer(count)]) { answer in
            let fields = try Answer.array(answer)
            guard fields.count == 2 else { throw Answer.malformed("[cursor, items]", answer) }
            return (fields[0] == .null ? nil : try Answer.uint(fields[0]), try Answer.pairs(fields[1]))
        }
    }
    /// Atomically adds `delta` to the number at `key` (absent keys start at `initial`).
    public static func increment(_ key: WireValue, by delta: WireValue, initial: WireValue = 0) -> ObjectCall<WireValue> {
        .init("incr", [key, delta, initial], decode: Answer.value)
    }
    /// Atomically sets `key` to `new` if it currently holds `expected` (nil: is absent).
    public static func compareAndSet(_ key: WireValue, expected: WireValue?, new: WireValue) -> ObjectCall<Bool> {
        .init("cas", [key, expected ?? .null, new], decode: Answer.bool)
    }
}

/// The typed calls of a shared list (Python `SyncManager.list()`).
public enum ListCall {
    public static func getItem(_ index: Int) -> ObjectCall<WireValue> { .init("getitem", [.integer(index)], decode: Answer.value) }
    public static func setItem(_ index: Int, _ value: WireValue) -> ObjectCall<Void> {
        .init("setitem", [.integer(index), value], decode: Answer.nothing)
    }
    public static func delItem(_ index: Int) -> ObjectCall<Void> { .init("delitem", [.integer(index)], decode: Answer.nothing) }
    public static func getSlice(_ start: Int?, _ stop: Int?, step: Int? = nil) -> ObjectCall<[WireValue]> {
        .init("getslice", sliceArguments(start, stop, step), decode: Answer.array)
    }
    public static func setSlice(_ start: Int?, _ stop: Int?, step: Int? = nil, _ values: [WireValue]) -> ObjectCall<Void> {
        .init("setslice", sliceArguments(start, stop, step) + [.array(values)], decode: Answer.nothing)
    }
    public static func delSlice(_ start: Int?, _ stop: Int?, step: Int? = nil) -> ObjectCall<Void> {
        .init("delslice", sliceArguments(start, stop, step), decode: Answer.nothing)
    }
    public static func append(_ value: WireValue) -> ObjectCall<Void> { .init("append", [value], decode: Answer.nothing) }
    public static func extend(_ values: [WireValue]) -> ObjectCall<Void> { .init("extend", [.array(values)], decode: Answer.nothing) }
    public static func insert(_ index: Int, _ value: WireValue) -> ObjectCall<Void> {
        .init("insert", [.integer(index), value], decode: Answer.nothing)
    }
    public static func pop(_ index: Int? = nil) -> ObjectCall<WireValue> {
        .init("pop", index.map { [.integer($0)] } ?? [], decode: Answer.value)
    }
    public static func remove(_ value: WireValue) -> ObjectCall<Void> { .init("remove", [value], decode: Answer.nothing) }
    public static func index(of value: WireValue, start: Int? = nil, stop: Int? = nil) -> ObjectCall<Int> {
        .init("index", [value, start.map { .integer($0) } ?? .null, stop.map { .integer($0) } ?? .null], decode: Answer.int)
    }
    public static func count(of value: WireValue) -> ObjectCall<Int> { .init("count", [value], decode: Answer.int) }
    public static func reverse() -> ObjectCall<Void> { .init("reverse", [], decode: Answer.nothing) }
    public static func sort(reverse: Bool = false) -> ObjectCall<Void> { .init("sort", [.bool(reverse)], decode: Answer.nothing) }
    public static func len() -> ObjectCall<Int> { .init("len", [], decode: Answer.int) }
    public static func contains(_ value: WireValue) -> ObjectCall<Bool> { .init("contains", [value], decode: Answer.bool) }
    public static func copy() -> ObjectCall<[WireValue]> { .init("copy", [], decode: Answer.array) }
    public static func clear() -> ObjectCall<Void> { .init("clear", [], decode: Answer.nothing) }

    static func sliceArguments(_ start: Int?, _ stop: Int?, _ step: Int?) -> [WireValue] {
        [start, stop, step].map { $0.map { .integer($0) } ?? .null }
    }
    /// Python `l + other`: a new list, made on the manager.
    public static func add(_ values: [WireValue]) -> ObjectCall<[WireValue]> { .init("add", [.array(values)], decode: Answer.array) }
    /// Python `l * n`: a new list, made on the manager.
    public static func multiply(_ times: Int) -> ObjectCall<[WireValue]> { .init("mul", [.integer(times)], decode: Answer.array) }
    /// Python `l *= n`, in place.
    public static func multiplyInPlace(_ times: Int) -> ObjectCall<Void> { .init("imul", [.integer(times)], decode: Answer.nothing) }
}

/// The typed calls of a shared set (Python 3.14 `SyncManager.set()`).
public enum SetCall {
    public static func add(_ member: WireValue) -> ObjectCall<Void> { .init("add", [member], decode: Answer.nothing) }
    public static func discard(_ member: WireValue) -> ObjectCall<Void> { .init("discard", [member], decode: Answer.nothing) }
    public static func remove(_ member: WireValue) -> ObjectCall<Void> { .init("remove", [member], decode: Answer.nothing) }
    public static func pop() -> ObjectCall<WireValue> { .init("pop", [], decode: Answer.value) }
    public static func contains(_ member: WireValue) -> ObjectCall<Bool> { .init("contains", [member], decode: Answer.bool) }
    public static func len() -> ObjectCall<Int> { .init("len", [], decode: Answer.int) }
    public static func copy() -> ObjectCall<[WireValue]> { .init("copy", [], decode: Answer.array) }
    public static func clear() -> ObjectCall<Void> { .init("clear", [], decode: Answer.nothing) }
    /// One page of members: pass nil first, then each answer's cursor until it is nil.
    public static func page(cursor: UInt64?, count: Int) -> ObjectCall<(cursor: UInt64?, members: [WireValue])> {
        .init("page", [cursor.map { .integer($0) } ?? .null, .integer(count)]) { answer in
            let fields = try Answer.array(answer)
            guard fields.count == 2 else { throw Answer.malformed("[cursor, members]", answer) }
            return (fields[0] == .null ? nil : try Answer.uint(fields[0]), try Answer.array(fields[1]))
        }
    }
    /// One of the in-place operations (`update`, `difference_update`, ...) with `members`.
    public static func change(_ operation: SetOperation, _ members: [WireValue]) -> ObjectCall<Void> {
        .init(operation == .union ? "update" : operation.rawValue + "_update", [.array(members)], decode: Answer.nothing)
    }
    /// One of the operations that make a new set (`union`, `difference`, ...), made on the manager.
    public static func combine(_ operation: SetOperation, _ members: [WireValue]) -> ObjectCall<[WireValue]> {
        .init(operation.rawValue, [.array(members)], decode: Answer.array)
    }
    /// `issubset`, `issuperset` or `isdisjoint` against `members`.
    public static func compare(_ relation: SetRelation, _ members: [WireValue]) -> ObjectCall<Bool> {
        .init(relation.rawValue, [.array(members)], decode: Answer.bool)
    }
}

/// The set operations that have a new-set and an in-place form.
public enum SetOperation: String, Sendable {
    case union, intersection, difference, symmetricDifference = "symmetric_difference"
}

/// The comparisons of a set with other members.
public enum SetRelation: String, Sendable {
    case subset = "issubset", superset = "issuperset", disjoint = "isdisjoint"
}

/// The typed calls of a shared Namespace (Python `SyncManager.Namespace()`).
public enum NamespaceCall {
    public static func getAttribute(_ name: String) -> ObjectCall<WireValue> { .init("getattr", [.string(name)], decode: Answer.value) }
    public static func setAttribute(_ name: String, _ value: WireValue) -> ObjectCall<Void> {
        .init("setattr", [.string(name), value], decode: Answer.nothing)
    }
    public static func deleteAttribute(_ name: String) -> ObjectCall<Void> { .init("delattr", [.string(name)], decode: Answer.nothing) }
    public static func attributes() -> ObjectCall<[WirePair]> { .init("attrs", [], decode: Answer.map) }
}

/// The typed calls of a shared Value (Python `SyncManager.Value(typecode, value)`).
public enum ValueCall {
    public static func get() -> ObjectCall<WireValue> { .init("get", [], decode: Answer.value) }
    public static func set(_ value: WireValue) -> ObjectCall<Void> { .init("set", [value], decode: Answer.nothing) }
    public static func increment(by delta: WireValue) -> ObjectCall<WireValue> { .init("incr", [delta], decode: Answer.value) }
    public static func compareAndSet(expected: WireValue, new: WireValue) -> ObjectCall<Bool> {
        .init("cas", [expected, new], decode: Answer.bool)
    }
    public static func getLock() -> ObjectCall<ObjectRef> { .init("get_lock", [], decode: Answer.reference) }
}

/// The typed calls of a shared Array (Python `SyncManager.Array(typecode, sequence)`).
public enum ArrayCall {
    public static func getItem(_ index: Int) -> ObjectCall<WireValue> { .init("getitem", [.integer(index)], decode: Answer.value) }
    public static func setItem(_ index: Int, _ value: WireValue) -> ObjectCall<Void> {
        .init("setitem", [.integer(index), value], decode: Answer.nothing)
    }
    public static func getSlice(_ start: Int?, _ stop: Int?, step: Int? = nil) -> ObjectCall<[WireValue]> {
        .init("getslice", ListCall.sliceArguments(start, stop, step), decode: Answer.array)
    }
    public static func setSlice(_ start: Int?, _ stop: Int?, step: Int? = nil, _ values: [WireValue]) -> ObjectCall<Void> {
        .init("setslice", ListCall.sliceArguments(start, stop, step) + [.array(values)], decode: Answer.nothing)
    }
    public static func len() -> ObjectCall<Int> { .init("len", [], decode: Answer.int) }
    public static func copy() -> ObjectCall<[WireValue]> { .init("copy", [], decode: Answer.array) }
    public static func increment(_ index: Int, by delta: WireValue) -> ObjectCall<WireValue> {
        .init("incr", [.integer(index), delta], decode: Answer.value)
    }
    public static func getLock() -> ObjectCall<ObjectRef> { .init("get_lock", [], decode: Answer.reference) }
}

/// The typed calls of shared queues: Queue, JoinableQueue, LifoQueue, PriorityQueue.
public enum QueueCall {
    public static func put(_ item: WireValue, block: Bool = true, timeout: Double? = nil) -> ObjectCall<Void> {
        .init("put", [item, .bool(block), wireTimeout(timeout)], decode: Answer.nothing)
    }
    public static func get(block: Bool = true, timeout: Double? = nil) -> ObjectCall<WireValue> {
        .init("get", [.bool(block), wireTimeout(timeout)], decode: Answer.value)
    }
    public static func putMany(_ items: [WireValue], timeout: Double? = nil) -> ObjectCall<Void> {
        .init("put_many", [.array(items), wireTimeout(timeout)], decode: Answer.nothing)
    }
    public static func getMany(max: Int, block: Bool = true, timeout: Double? = nil) -> ObjectCall<[WireValue]> {
        .init("get_many", [.integer(max), .bool(block), wireTimeout(timeout)], decode: Answer.array)
    }
    public static func qsize() -> ObjectCall<Int> { .init("qsize", [], decode: Answer.int) }
    public static func empty() -> ObjectCall<Bool> { .init("empty", [], decode: Answer.bool) }
    public static func full() -> ObjectCall<Bool> { .init("full", [], decode: Answer.bool) }
    public static func taskDone() -> ObjectCall<Void> { .init("task_done", [], decode: Answer.nothing) }
    public static func join(timeout: Double? = nil) -> ObjectCall<Bool> { .init("join", [wireTimeout(timeout)], decode: Answer.bool) }
    public static func shutdown(immediate: Bool = false) -> ObjectCall<Void> {
        .init("shutdown", [.bool(immediate)], decode: Answer.nothing)
    }
}

/// What an acquire of a shared lock, RLock, semaphore or condition answers.
public struct LockGrant: Hashable, Sendable {
    /// Whether the caller now holds it (false: not blocking, or timed out).
    public var acquired: Bool
    /// Increases with every grant of this object; stores can reject a stale holder.
    public var fencingToken: UInt64
    /// The previous holder's session died while holding it: what it guarded may be half-updated.
    public var previousOwnerDied: Bool

    public init(acquired: Bool, fencingToken: UInt64, previousOwnerDied: Bool) {
        self.acquired = acquired
        self.fencingToken = fencingToken
        self.previousOwnerDied = previousOwnerDied
    }

    public var wireValue: WireValue {
        ["acquired": .bool(acquired), "token": .integer(fencingToken), "owner_died": .bool(previousOwnerDied)]
    }

    @Sendable public static func decode(_ answer: WireValue) throws -> LockGrant {
        guard let acquired = answer["acquired"]?.boolValue, let token = answer["token"]?.uint64Value,
            let died = answer["owner_died"]?.boolValue
        else { throw Answer.malformed("a lock grant {acquired, token, owner_died}", answer) }
        return LockGrant(acquired: acquired, fencingToken: token, previousOwnerDied: died)
    }
}

/// The typed calls of shared Lock, RLock, Semaphore, BoundedSemaphore and Condition. `owner`
/// identifies the calling thread or task within its session.
public enum LockCall {
    public static func acquire(owner: UInt64, blocking: Bool = true, timeout: Double? = nil) -> ObjectCall<LockGrant> {
        .init("acquire", [.integer(owner), .bool(blocking), wireTimeout(timeout)], decode: LockGrant.decode)
    }
    public static func release(owner: UInt64) -> ObjectCall<Void> { .init("release", [.integer(owner)], decode: Answer.nothing) }
    public static func locked() -> ObjectCall<Bool> { .init("locked", [], decode: Answer.bool) }
    /// Whether `owner` of this session holds it.
    public static func isOwned(owner: UInt64) -> ObjectCall<Bool> { .init("is_owned", [.integer(owner)], decode: Answer.bool) }
    /// Semaphores: return `n` permits.
    public static func release(owner: UInt64, permits n: Int) -> ObjectCall<Void> {
        .init("release", [.integer(owner), .integer(n)], decode: Answer.nothing)
    }
    /// Semaphores: the permits available now.
    public static func value() -> ObjectCall<Int> { .init("value", [], decode: Answer.int) }
}

/// The typed calls of a shared Condition beyond its lock's.
public enum ConditionCall {
    public static func wait(owner: UInt64, timeout: Double? = nil) -> ObjectCall<Bool> {
        .init("wait", [.integer(owner), wireTimeout(timeout)], decode: Answer.bool)
    }
    public static func notify(owner: UInt64, _ n: Int = 1) -> ObjectCall<Void> {
        .init("notify", [.integer(owner), .integer(n)], decode: Answer.nothing)
    }
    public static func notifyAll(owner: UInt64) -> ObjectCall<Void> { .init("notify_all", [.integer(owner)], decode: Answer.nothing) }
}

/// The typed calls of a shared Event.
public enum EventCall {
    public static func set() -> ObjectCall<Void> { .init("set", [], decode: Answer.nothing) }
    public static func clear() -> ObjectCall<Void> { .init("clear", [], decode: Answer.nothing) }
    public static func isSet() -> ObjectCall<Bool> { .init("is_set", [], decode: Answer.bool) }
    public static func wait(timeout: Double? = nil) -> ObjectCall<Bool> { .init("wait", [wireTimeout(timeout)], decode: Answer.bool) }
}

public enum BarrierCall {
    /// This party's index in `0..<parties`.
    public static func wait(timeout: Double? = nil) -> ObjectCall<Int> {
        .init("wait", [wireTimeout(timeout)]) { answer in
            guard let index = answer["index"]?.int64Value else { throw Answer.malformed("{index}", answer) }
            return Int(index)
        }
    }
    /// The creator's session waits here until a round needs the barrier's action.
    public static func awaitAction() -> ObjectCall<Void> { .init("await_action", [], decode: Answer.nothing) }
    /// The action ran (`failure` nil) or threw (its description).
    public static func actionDone(failure: String? = nil) -> ObjectCall<Void> {
        .init("action_done", failure.map { [.bool(false), .string($0)] } ?? [.bool(true)], decode: Answer.nothing)
    }
    public static func reset() -> ObjectCall<Void> { .init("reset", [], decode: Answer.nothing) }
    public static func abort() -> ObjectCall<Void> { .init("abort", [], decode: Answer.nothing) }
    public static func parties() -> ObjectCall<Int> { .init("parties", [], decode: Answer.int) }
    public static func nWaiting() -> ObjectCall<Int> { .init("n_waiting", [], decode: Answer.int) }
    public static func broken() -> ObjectCall<Bool> { .init("broken", [], decode: Answer.bool) }
}

/// What a pool's `next` answers: the outcomes ready now, in the job's order.
public struct PoolBatch: Sendable {
    /// The values, still encoded; nil where a call failed.
    public var values: EncodedValues
    /// The failed calls: their place in `values`, and the error their caller gets.
    public var failures: [(position: Int, error: RemoteError)]
    /// Every outcome has now been taken; the job is gone from the manager.
    public var finished: Bool
    /// Calls finished so far, and how many there are once the input is complete.
    public var completed: Int
    public var total: Int?

    static let shape = "[finished, [value], completed, total, [[position, error]]]"

    /// Checks the fields of an answer; `values` is already read.
    init(finished: WireValue, values: EncodedValues, completed: WireValue, total: WireValue, failures: WireValue) throws {
        guard let finished = finished.boolValue, let completed = completed.int64Value.flatMap(Int.init(exactly:)),
            let failureList = failures.arrayValue
        else { throw WireFormatError(.malformedMessage, "expected \(PoolBatch.shape) in the answer") }
        self.failures = try failureList.map { failure -> (position: Int, error: RemoteError) in
            guard let pair = failure.arrayValue, pair.count == 2, let position = pair[0].int64Value.flatMap(Int.init(exactly:)),
                (0..<values.count).contains(position)
            else { throw Answer.malformed("[position, error]", failure) }
            return (position, try RemoteError(wireValue: pair[1]))
        }
        self.values = values
        self.finished = finished
        self.completed = completed
        self.total = total.int64Value.flatMap(Int.init(exactly:))
    }

    /// Reads a `next` answer's body, its values checked but left encoded.
    public init(body: ByteBuffer, limits: WireLimits = .default) throws {
        self = try body.withUnsafeReadableBytes { raw in
            var reader = MessagePackReader(bytes: raw.bindMemory(to: UInt8.self), limits: limits)
            guard try reader.arrayHeader(depth: 0) == 5 else { throw WireFormatError(.malformedMessage, "expected \(PoolBatch.shape) in the answer") }
            let finished = try reader.readValue(depth: 1)
            let values = try EncodedValues.scanArray(&reader, depth: 1)
            let batch = try PoolBatch(
                finished: finished, values: values, completed: try reader.readValue(depth: 1), total: try reader.readValue(depth: 1),
                failures: try reader.readValue(depth: 1))
            guard reader.offset == raw.count else { throw WireFormatError(.malformedMessage, "bytes follow the answer \(PoolBatch.shape)") }
            return batch
        }
    }

    /// Each call's value or error, in order.
    public var outcomes: [Result<WireValue, RemoteError>] {
        var outcomes = values.values.map { Result<WireValue, RemoteError>.success($0) }
        for (position, error) in failures { outcomes[position] = .failure(error) }
        return outcomes
    }
}

/// The typed calls of a pool (Python `multiprocessing.Pool`); one per `PoolMethod`.
public enum PoolCall {
    /// `job`: an id this session chose (its session id << 32 | a fresh number), whose
    /// outcome `results` then pushes.
    public static func submit(task: String, arguments: [WireValue], job: UInt64? = nil) -> ObjectCall<UInt64> {
        .init(PoolMethod.submit.rawValue, [.string(task), .array(arguments)] + (job.map { [.integer($0)] } ?? []), decode: Answer.uint)
    }
    /// Submits one call and parks until its outcome: Python's blocking `apply`, one request
    /// and one answer.
    public static func apply(task: String, arguments: [WireValue]) -> ObjectCall<WireValue> {
        .init(PoolMethod.apply.rawValue, [.string(task), .array(arguments)], decode: Answer.value)
    }
    public static func results(max: Int? = nil, timeout: Double? = nil) -> ObjectCall<[WireValue]> {
        .init(PoolMethod.results.rawValue, [max.map { .integer($0) } ?? .null, wireTimeout(timeout)], decode: Answer.array)
    }
    /// Each call is its one argument, or with `starred` its argument list; `more` keeps the
    /// input open for `feed`.
    /// `total`: how many calls a streamed input will have (for the automatic chunk size).
    /// `job`: an id this session chose, as `submit`'s, so that `feed`s can follow at once.
    public static func map(
        task: String, calls: [WireValue], chunksize: Int?, ordered: Bool, more: Bool, starred: Bool = false, total: Int? = nil,
        job: UInt64? = nil
    ) -> ObjectCall<UInt64> {
        var arguments: [WireValue] = [.string(task), .array(calls), chunksize.map { .integer($0) } ?? .null, .bool(ordered), .bool(more), .bool(starred)]
        if total != nil || job != nil { arguments.append(total.map { .integer($0) } ?? .null) }
        if let job { arguments.append(.integer(job)) }
        return .init(PoolMethod.map.rawValue, arguments, decode: Answer.uint)
    }
    public static func feed(job: UInt64, calls: [WireValue], last: Bool) -> ObjectCall<Void> {
        .init(PoolMethod.feed.rawValue, [.integer(job), .array(calls), .bool(last)], decode: Answer.nothing)
    }

    /// `map`'s request body for the pool object `pool`, its calls written from their bytes.
    public static func mapRequest(
        pool: UInt64, task: String, calls: EncodedValues, chunksize: Int?, ordered: Bool, more: Bool, starred: Bool = false,
        total: Int? = nil, job: UInt64? = nil
    ) -> ByteBuffer {
        let call = map(task: task, calls: [], chunksize: chunksize, ordered: ordered, more: more, starred: starred, total: total, job: job)
        return .callRequest(object: pool, method: call.method, arguments: call.arguments, array: calls, at: 1)
    }

    /// `feed`'s request body for the pool object `pool`, its calls written from their bytes.
    public static func feedRequest(pool: UInt64, job: UInt64, calls: EncodedValues, last: Bool) -> ByteBuffer {
        let call = feed(job: job, calls: [], last: last)
        return .callRequest(object: pool, method: call.method, arguments: call.arguments, array: calls, at: 1)
    }
    public static func result(job: UInt64, timeout: Double? = nil) -> ObjectCall<WireValue> {
        .init(PoolMethod.result.rawValue, [.integer(job), wireTimeout(timeout)], decode: Answer.value)
    }
    public static func next(job: UInt64, max: Int? = nil, timeout: Double? = nil) -> ObjectCall<PoolBatch> {
        .init(
            PoolMethod.next.rawValue, [.integer(job), max.map { .integer($0) } ?? .null, wireTimeout(timeout)], decode: Answer.poolBatch,
            decodeBody: { try PoolBatch(body: $0) })
    }
    public static func wait(job: UInt64, timeout: Double? = nil) -> ObjectCall<Bool> {
        .init(PoolMethod.wait.rawValue, [.integer(job), wireTimeout(timeout)], decode: Answer.bool)
    }
    public static func ready(job: UInt64) -> ObjectCall<Bool> { .init(PoolMethod.ready.rawValue, [.integer(job)], decode: Answer.bool) }
    public static func successful(job: UInt64) -> ObjectCall<Bool> { .init(PoolMethod.successful.rawValue, [.integer(job)], decode: Answer.bool) }
    public static func progress(job: UInt64) -> ObjectCall<(completed: Int, total: Int?)> {
        .init(PoolMethod.progress.rawValue, [.integer(job)], decode: Answer.progress)
    }
    public static func cancel(job: UInt64) -> ObjectCall<Bool> { .init(PoolMethod.cancel.rawValue, [.integer(job)], decode: Answer.bool) }
    public static func close() -> ObjectCall<Void> { .init(PoolMethod.close.rawValue, [], decode: Answer.nothing) }
    public static func terminate() -> ObjectCall<Void> { .init(PoolMethod.terminate.rawValue, [], decode: Answer.nothing) }
    public static func join(timeout: Double? = nil) -> ObjectCall<Bool> { .init(PoolMethod.join.rawValue, [wireTimeout(timeout)], decode: Answer.bool) }
    public static func workers() -> ObjectCall<[WireValue]> { .init(PoolMethod.workers.rawValue, [], decode: Answer.array) }
    public static func adopt(job: UInt64) -> ObjectCall<Void> { .init(PoolMethod.adopt.rawValue, [.integer(job)], decode: Answer.nothing) }
}

extension Answer {
    @Sendable static func poolBatch(_ answer: WireValue) throws -> PoolBatch {
        guard let fields = answer.arrayValue, fields.count == 5, let values = fields[1].arrayValue else {
            throw malformed(PoolBatch.shape, answer)
        }
        return try PoolBatch(finished: fields[0], values: EncodedValues(values), completed: fields[2], total: fields[3], failures: fields[4])
    }

    @Sendable static func progress(_ answer: WireValue) throws -> (completed: Int, total: Int?) {
        guard let fields = answer.arrayValue, fields.count == 2, let completed = fields[0].int64Value.flatMap(Int.init(exactly:)) else {
            throw malformed("[completed, total]", answer)
        }
        return (completed, fields[1].int64Value.flatMap(Int.init(exactly:)))
    }
}
