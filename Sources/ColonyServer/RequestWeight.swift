import ColonyWire

/// Which requests are heavy: those whose work grows with something bigger than one event
/// loop should spend on a single request (a large body, an Array of 10^7 items, a copy of
/// a list of a million). A session hands them back with `.offload`; its connection runs them
/// on a thread of the offload pool and reads nothing more until they are done, so the other
/// sessions of its event loop keep their latency and this one keeps its order.
enum RequestWeight {
    /// A body at least this large is heavy: decoding it alone takes about a millisecond.
    static let heavyBodyBytes = 128 << 10
    /// Work over at least this many elements is heavy (again about a millisecond).
    static let heavyElements = 1 << 16

    /// Whether a request of `bodyBytes` bytes is heavy before it is even decoded.
    static func isHeavy(bodyBytes: Int) -> Bool { bodyBytes >= heavyBodyBytes }

    /// Whether `request`, to objects of `store`, is heavy.
    static func isHeavy(_ request: Request, in store: ObjectStore) -> Bool {
        switch request {
        case .new(let type, _, let options):
            // A few bytes of options can ask for an Array of 10^8 items.
            return type == .array && options["items"] == nil && (options["size"]?.int64Value ?? 0) >= heavyElements
        case .call(let id, let method, let arguments):
            guard !isItemWork(method), let target = store.object(id) else { return false }
            return isHeavy(target, method, arguments)
        case .batch(let requests):
            return requests.contains { isHeavy($0, in: store) }
        case .status:
            return true  // it walks every object and session
        case .release(let id, _):
            // The last reference frees the object, item by item.
            return (store.object(id)?.size ?? 0) >= heavyElements
        case .delete(let name):
            return (store.object(named: name)?.size ?? 0) >= heavyElements
        case .attach:
            return false
        }
    }

    /// Bytes of strings and bytes in an answer from which encoding it is heavy.
    static let heavyAnswerBytes = 4 << 20

    /// Whether encoding `answer` is heavy: a stored value can be big however small the
    /// request that reads it (a `get` of a list of a million items). The walk stops as soon
    /// as it has seen enough, so weighing costs little either way.
    static func isHeavy(answer: WireValue) -> Bool {
        var elements = 0
        var bytes = 0
        func exceeds(_ value: WireValue) -> Bool {
            elements += 1
            switch value {
            case .string(let text): bytes += text.utf8.count
            case .bytes(let raw): bytes += raw.count
            case .array(let items):
                for item in items where exceeds(item) { return true }
            case .map(let pairs):
                for pair in pairs where exceeds(pair.key) || exceeds(pair.value) { return true }
            default: break
            }
            return elements >= heavyElements || bytes >= heavyAnswerBytes
        }
        return exceeds(answer)
    }

    /// A call is heavy when it multiplies a list into many items, or when its method's work
    /// grows with its object (a copy, a scan, a sort) and the object is big.
    static func isHeavy(_ object: any SharedObject, _ method: String, _ arguments: [WireValue]) -> Bool {
        let type = object.type
        if type == .list, method == "mul" || method == "imul" {
            let times = Int(clamping: max(arguments.first?.int64Value ?? 0, 0))
            let (items, overflow) = object.size.multipliedReportingOverflow(by: times)
            return overflow || items >= heavyElements
        }
        guard let bounded = boundedMethods(of: type) else { return false }
        if bounded.contains(method) {
            switch (type, method) {
            case (.list, "pop"):
                // Popping the last item is constant; any other index moves the items after it.
                guard let index = arguments.first, index != .null, index.int64Value != -1 else { return false }
            case (.dict, "page"), (.set, "page"):
                guard arguments.count > 1, let count = arguments[1].int64Value, count >= heavyElements else { return false }
                return true
            case (_, "get_many"):
                guard let most = arguments.first?.int64Value, most >= heavyElements else { return false }
                return true
            default:
                return false
            }
        }
        return object.size >= heavyElements
    }

    /// Methods that touch one item or a counter on every type that has them: the calls that
    /// make up nearly all traffic are weighed without looking up their object.
    @inline(__always)
    private static func isItemWork(_ method: String) -> Bool {
        switch method {
        case "getitem", "setitem", "get", "set", "len", "append", "put", "incr", "cas", "acquire", "release", "getattr", "setattr":
            true
        default:
            false
        }
    }

    /// The methods of a family whose work does not grow with the object (an item, a length,
    /// a push); nil for families whose every method is bounded (values, locks, pools).
    private static func boundedMethods(of type: ObjectType) -> Set<String>? {
        switch type {
        case .dict: dictMethods
        case .list: listMethods
        case .set: setMethods
        case .namespace: namespaceMethods
        case .array: arrayMethods
        case .queue, .joinableQueue, .lifoQueue, .priorityQueue: queueMethods
        default: nil
        }
    }

    private static let dictMethods: Set<String> = [
        "getitem", "setitem", "delitem", "contains", "len", "get", "pop", "popitem", "setdefault", "update", "fromkeys", "incr",
        "cas", "page",
    ]
    private static let listMethods: Set<String> = ["getitem", "setitem", "append", "extend", "len", "pop"]
    private static let setMethods: Set<String> = [
        "add", "discard", "remove", "pop", "contains", "len", "update", "difference_update", "symmetric_difference_update", "page",
    ]
    private static let namespaceMethods: Set<String> = ["getattr", "setattr", "delattr"]
    private static let arrayMethods: Set<String> = ["getitem", "setitem", "len", "incr", "get_lock"]
    private static let queueMethods: Set<String> = [
        "put", "get", "put_many", "get_many", "qsize", "empty", "full", "task_done", "join",
    ]
}
