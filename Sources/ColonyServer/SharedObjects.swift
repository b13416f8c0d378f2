import ColonyWire
import Threading

/// References an object starts or stops holding during one call; the store applies them
/// after the call, adopting before dropping, so a value moved within an object never dies.
struct ReferenceChanges {
    var adopted: [UInt64] = []
    var dropped: [UInt64] = []
    /// The last journal record whose change the call's answer shows (its own change's, or
    /// those it read), for `--persist always`: the answer may leave once that one is synced.
    /// Nil when the call does not say, and then the answer waits for every record so far.
    var answerShowsRecord: UInt64?

    mutating func adopt(_ value: WireValue) {
        if value.mayContainReferences { value.collectObjectIDs(into: &adopted) }
    }

    mutating func drop(_ value: WireValue) {
        if value.mayContainReferences { value.collectObjectIDs(into: &dropped) }
    }

    var isEmpty: Bool { adopted.isEmpty && dropped.isEmpty }
}

/// An object the manager holds. Each has its own lock, so calls on unrelated objects never
/// wait for each other.
protocol SharedObject: AnyObject, Sendable {
    var type: ObjectType { get }
    /// Elements, entries or attributes, for `status`.
    var size: Int { get }
    /// Calls parked on the object, for `status`.
    var waiting: Int { get }
    /// The object as one with blocking methods, if it has them (no dynamic cast on the hot path).
    var blocking: (any BlockingObject)? { get }
    /// Runs one non-blocking method atomically.
    func call(_ method: String, _ arguments: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue
    /// Runs one method for a session; blocking objects may park it (Parking.swift).
    func call(_ method: String, _ arguments: [WireValue], _ context: CallContext, _ changes: inout ReferenceChanges) throws(RemoteError)
        -> CallResult
    /// Empties the object when it is freed; returns the references it held.
    func removeAll() -> [UInt64]
    /// The references it holds now, once per occurrence: what `removeAll` would return
    /// (the cycle collector's edges).
    func referencedIDs() -> [UInt64]
}

/// Checks argument counts with Python-like messages.
struct Arguments {
    let method: String
    let values: [WireValue]

    init(_ method: String, _ values: [WireValue], count range: ClosedRange<Int>) throws(RemoteError) {
        guard range.contains(values.count) else {
            let expected = range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound) to \(range.upperBound)"
            throw RemoteError(.badRequest, "\(method)() takes \(expected) arguments (\(values.count) given)")
        }
        self.method = method
        self.values = values
    }

    subscript(index: Int) -> WireValue { values[index] }
    func optional(_ index: Int) -> WireValue? {
        // Not `cond ? values[index] : nil`: WireValue is ExpressibleByNilLiteral, so that nil
        // would become `.null` instead of "absent".
        guard index < values.count else { return Optional.none }
        return values[index]
    }

    func int(_ index: Int) throws(RemoteError) -> Int {
        guard let number = values[index].int64Value.flatMap({ Int(exactly: $0) }) else {
            if case .uint = values[index] {
                throw RemoteError(.valueError, "\(method)(): argument \(index + 1) (\(values[index].pythonRepr)) is too large for an index or count")
            }
            throw RemoteError(.wrongType, "\(method)(): argument \(index + 1) must be an integer, not \(values[index].kindDescription)")
        }
        return number
    }

    func string(_ index: Int) throws(RemoteError) -> String {
        guard let text = values[index].stringValue else {
            throw RemoteError(.wrongType, "\(method)(): argument \(index + 1) must be a string, not \(values[index].kindDescription)")
        }
        return text
    }

    func bool(_ index: Int) throws(RemoteError) -> Bool {
        guard let flag = values[index].boolValue else {
            throw RemoteError(.wrongType, "\(method)(): argument \(index + 1) must be a bool, not \(values[index].kindDescription)")
        }
        return flag
    }

    /// An optional bool argument (absent or nil: `value`).
    func bool(_ index: Int, default value: Bool) throws(RemoteError) -> Bool {
        guard let given = optional(index), given != .null else { return value }
        return try bool(index)
    }
}

func unknownMethod(_ type: ObjectType, _ method: String) -> RemoteError {
    RemoteError(.unsupported, "a \(type) has no method '\(method)'")
}

// MARK: - dict

/// Python `dict` semantics: insertion order, `d[1] is d[1.0]`, LIFO `popitem`.
final class SharedDict: PersistentObject, @unchecked Sendable {
    let type = ObjectType.dict
    let lock = Lock()
    var journal: ObjectJournal? {
        // Set once, before the dict is published: its creation is its last record then.
        didSet { keyRecords = journal.flatMap { $0.answersWait ? KeyRecords(since: $0.lastRecord.load(ordering: .relaxed)) : nil } }
    }
    private var state = DictState()  // guarded by lock
    private var keyRecords: KeyRecords?  // guarded by lock; kept dicts whose answers wait

    init(items: [WirePair], changes: inout ReferenceChanges) {
        for pair in items { state.store(pair.key, pair.value, &changes) }
    }

    var size: Int { lock.withLock { state.positions.count } }

    func call(_ method: String, _ values: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue {
        try recorded(method, values, &changes, finer: { record, journal in keyShown(method, values, record, journal) }) {
            (changes: inout ReferenceChanges) throws(RemoteError) -> WireValue in try state.call(method, values, &changes)
        }
    }

    /// Under the lock, when answers wait for the journal: a read of one key shows only that
    /// key's changes (`KeyRecords`), and waits only for them.
    private func keyShown(_ method: String, _ values: [WireValue], _ record: UInt64?, _ journal: ObjectJournal) -> UInt64? {
        guard keyRecords != nil else { return nil }
        // Changed in place: a copy taken out would copy the table at every change.
        guard let record else { return keyRecords!.shown(by: method, values) }
        keyRecords!.changed(method, values, record: record, kept: journal.journal.keptCount)
        return record
    }

    func removeAll() -> [UInt64] {
        lock.withLock { state.removeAll() }
    }

    func referencedIDs() -> [UInt64] { lock.withLock { state.referencedIDs } }

    func snapshot() -> KeptState { lock.withLock { KeptState(options: ["items": .map(state.livePairs)]) } }
}

/// The last journal record of each key of a kept dict changed lately (`--persist always`), so
/// that an answer that shows one key waits for that key's changes only, not for every change
/// to the dict: with many clients writing their own keys of one dict, a read of a key that
/// was kept already leaves at once.
struct KeyRecords {
    private var records: [WireValue: UInt64] = [:]
    /// The last change not tied to single keys (clear, popitem, update), or before tracking began.
    private(set) var whole: UInt64
    /// Keys changed at or before the journal's kept record are forgotten once this many are held.
    private var forgetAt = KeyRecords.minimumForgetAt
    static let minimumForgetAt = 1024

    init(since record: UInt64) { whole = record }

    /// Notes a change recorded as `record`; `kept` is the journal's kept record now.
    mutating func changed(_ method: String, _ values: [WireValue], record: UInt64, kept: UInt64) {
        if KeyRecords.singleKeyChanges.contains(method), let key = values.first {
            records[PythonSemantics.dictKey(key)] = record
        } else {
            whole = record
        }
        if records.count >= forgetAt {
            records = records.filter { $0.value > kept }
            forgetAt = max(KeyRecords.minimumForgetAt, 2 * records.count)
        }
    }

    /// The last record a single-key read shows, or nil if the method is not one.
    func shown(by method: String, _ values: [WireValue]) -> UInt64? {
        guard method == "getitem" || method == "get" || method == "contains", let key = values.first else { return nil }
        return max(whole, records[PythonSemantics.dictKey(key)] ?? 0)
    }

    /// Changes that touch only the key they are given first.
    private static let singleKeyChanges: Set<String> = ["setitem", "delitem", "pop", "setdefault", "incr", "cas"]
}

/// A dict's contents. One value, so that a call changes it through a single access.
/// Entries keep insertion order; removed ones leave a hole (nil) that a compaction clears
/// once holes outnumber entries.
struct DictState {
    var entries: [WirePair?] = []
    var positions: [WireValue: Int] = [:]
    var generation: UInt64 = 0

    func contains(_ key: WireValue) -> Bool { positions[PythonSemantics.dictKey(key)] != nil }

    mutating func store(_ key: WireValue, _ value: WireValue, _ changes: inout ReferenceChanges) {
        let key = PythonSemantics.dictKey(key)
        changes.adopt(value)
        if let position = positions[key] {
            changes.drop(entries[position]!.value)
            entries[position]!.value = value
        } else {
            changes.adopt(key)
            positions[key] = entries.count
            entries.append(WirePair(key, value))
        }
    }

    mutating func remove(_ key: WireValue, _ changes: inout ReferenceChanges) -> WireValue? {
        guard let position = positions.removeValue(forKey: PythonSemantics.dictKey(key)) else { return nil }
        let pair = entries[position]!
        entries[position] = nil
        changes.drop(pair.key)
        changes.drop(pair.value)
        if entries.count > 64 && positions.count * 2 < entries.count - positions.count { compact() }
        return pair.value
    }

    private mutating func compact() {
        entries = entries.compactMap { $0 }.map { Optional($0) }
        positions.removeAll(keepingCapacity: true)
        for (index, pair) in entries.enumerated() { positions[pair!.key] = index }
        generation += 1
    }

    var livePairs: [WirePair] { entries.compactMap { $0 } }

    /// The references in keys and values, once per occurrence.
    var referencedIDs: [UInt64] {
        var ids: [UInt64] = []
        for case let pair? in entries {
            pair.key.collectObjectIDs(into: &ids)
            pair.value.collectObjectIDs(into: &ids)
        }
        return ids
    }

    func keyError(_ key: WireValue) -> RemoteError {
        RemoteError(.keyError, "KeyError: \(key.pythonRepr)", detail: key)
    }

    mutating func call(_ method: String, _ values: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue {
        switch method {
        case "getitem":
            let arguments = try Arguments(method, values, count: 1...1)
            guard let position = positions[PythonSemantics.dictKey(arguments[0])] else { throw keyError(arguments[0]) }
            return entries[position]!.value
        case "setitem":
            let arguments = try Arguments(method, values, count: 2...2)
            store(arguments[0], arguments[1], &changes)
            return .null
        case "delitem":
            let arguments = try Arguments(method, values, count: 1...1)
            guard remove(arguments[0], &changes) != nil else { throw keyError(arguments[0]) }
            return .null
        case "contains":
            let arguments = try Arguments(method, values, count: 1...1)
            return .bool(positions[PythonSemantics.dictKey(arguments[0])] != nil)
        case "len":
            _ = try Arguments(method, values, count: 0...0)
            return .integer(positions.count)
        case "keys":
            _ = try Arguments(method, values, count: 0...0)
            return .array(livePairs.map(\.key))
        case "values":
            _ = try Arguments(method, values, count: 0...0)
            return .array(livePairs.map(\.value))
        case "items":
            _ = try Arguments(method, values, count: 0...0)
            return .array(livePairs.map { [$0.key, $0.value] })
        case "get":
            let arguments = try Arguments(method, values, count: 1...2)
            guard let position = positions[PythonSemantics.dictKey(arguments[0])] else { return arguments.optional(1) ?? .null }
            return entries[position]!.value
        case "pop":
            let arguments = try Arguments(method, values, count: 1...2)
            if let value = remove(arguments[0], &changes) { return value }
            guard let fallback = arguments.optional(1) else { throw keyError(arguments[0]) }
            return fallback
        case "popitem":
            _ = try Arguments(method, values, count: 0...0)
            guard let last = entries.lastIndex(where: { $0 != nil }) else {
                throw RemoteError(.keyError, "KeyError: 'popitem(): dictionary is empty'")
            }
            let pair = entries[last]!
            _ = remove(pair.key, &changes)
            return [pair.key, pair.value]
        case "setdefault":
            let arguments = try Arguments(method, values, count: 1...2)
            if let position = positions[PythonSemantics.dictKey(arguments[0])] { return entries[position]!.value }
            let fallback = arguments.optional(1) ?? .null
            store(arguments[0], fallback, &changes)
            return fallback
        case "update":
            let arguments = try Arguments(method, values, count: 1...1)
            guard let pairs = arguments[0].mapValue else {
                throw RemoteError(.wrongType, "update() needs a map, not \(arguments[0].kindDescription)")
            }
            for pair in pairs { store(pair.key, pair.value, &changes) }
            return .null
        case "clear":
            _ = try Arguments(method, values, count: 0...0)
            for pair in livePairs {
                changes.drop(pair.key)
                changes.drop(pair.value)
            }
            entries = []
            positions = [:]
            generation += 1
            return .null
        case "copy":
            _ = try Arguments(method, values, count: 0...0)
            return .map(livePairs)
        case "or":
            let arguments = try Arguments(method, values, count: 1...1)
            guard let pairs = arguments[0].mapValue else { throw RemoteError(.wrongType, "unsupported operand type(s) for |: 'dict' and '\(arguments[0].kindDescription)'") }
            var merged = self
            var ignored = ReferenceChanges()
            for pair in pairs { merged.store(pair.key, pair.value, &ignored) }
            return .map(merged.livePairs)
        case "fromkeys":
            let arguments = try Arguments(method, values, count: 1...2)
            guard let keys = arguments[0].arrayValue else { throw RemoteError(.wrongType, "fromkeys() needs a list of keys, not \(arguments[0].kindDescription)") }
            var made = DictState()
            var ignored = ReferenceChanges()
            for key in keys { made.store(key, arguments.optional(1) ?? .null, &ignored) }
            return .map(made.livePairs)
        case "reversed":
            _ = try Arguments(method, values, count: 0...0)
            return .array(livePairs.reversed().map(\.key))
        case "page":
            return try page(Arguments(method, values, count: 2...2))
        case "incr":
            let arguments = try Arguments(method, values, count: 2...3)
            let current = positions[PythonSemantics.dictKey(arguments[0])].map { entries[$0]!.value } ?? (arguments.optional(2) ?? 0)
            let updated = try PythonSemantics.add(current, arguments[1])
            store(arguments[0], updated, &changes)
            return updated
        case "cas":
            let arguments = try Arguments(method, values, count: 3...3)
            let current = positions[PythonSemantics.dictKey(arguments[0])].map { entries[$0]!.value }
            let matches = arguments[1] == .null ? current == nil : current.map { PythonSemantics.equal($0, arguments[1]) } ?? false
            if matches { store(arguments[0], arguments[2], &changes) }
            return .bool(matches)
        default:
            throw unknownMethod(.dict, method)
        }
    }

    /// Cursor: generation in the top 24 bits, position in the low 40.
    private func page(_ arguments: Arguments) throws(RemoteError) -> WireValue {
        let count = try arguments.int(1)
        guard count > 0 else { throw RemoteError(.valueError, "page(): count must be positive") }
        var position = 0
        if arguments[0] != .null {
            guard let cursor = arguments[0].uint64Value else { throw RemoteError(.wrongType, "page(): the cursor must be nil or a cursor") }
            guard cursor >> 40 == generation & 0xff_ffff else {
                throw RemoteError(.valueError, "the dict was cleared or compacted during iteration; iterate again from the start")
            }
            position = Int(cursor & 0xff_ffff_ffff)
        }
        var items: [WireValue] = []
        while position < entries.count && items.count < count {
            if let pair = entries[position] { items.append([pair.key, pair.value]) }
            position += 1
        }
        let next: WireValue = position < entries.count ? .integer((generation & 0xff_ffff) << 40 | UInt64(position)) : .null
        return [next, .array(items)]
    }

    mutating func removeAll() -> [UInt64] {
        var changes = ReferenceChanges()
        for pair in livePairs {
            changes.drop(pair.key)
            changes.drop(pair.value)
        }
        entries = []
        positions = [:]
        return changes.dropped
    }
}

// MARK: - list

/// Python `list` semantics, including negative indices and extended slices.
final class SharedList: PersistentObject, @unchecked Sendable {
    let type = ObjectType.list
    let lock = Lock()
    var journal: ObjectJournal?
    private var items: [WireValue]  // guarded by lock

    init(items: [WireValue], changes: inout ReferenceChanges) {
        self.items = items
        for item in items { changes.adopt(item) }
    }


    /// `l * n`'s n: negative counts as zero, as in Python; a result past 2^28 items is refused.
    static func repeatCount(_ arguments: Arguments, limit count: Int) throws(RemoteError) -> Int {
        let times = max(0, try arguments.int(0))
        // An empty list stays empty however often it repeats (Python: [] * 10**18 is []).
        guard count > 0 else { return min(times, 1) }
        guard times <= (1 << 28) / count else { throw RemoteError(.valueError, "cannot repeat a list of \(count) items \(times) times: too large") }
        return times
    }

    /// `items` `times` over, in one allocation of the final size (appending copies would grow
    /// the storage by doubling, up to twice what the memory budget admitted).
    static func repeated(_ items: [WireValue], _ times: Int) -> [WireValue] {
        var result: [WireValue] = []
        result.reserveCapacity(items.count * times)
        for _ in 0..<times { result += items }
        return result
    }
    var size: Int { lock.withLock { items.count } }

    func snapshot() -> KeptState { lock.withLock { KeptState(options: ["items": .array(items)]) } }

    private func position(_ arguments: Arguments, _ index: Int, _ what: String = "list index out of range") throws(RemoteError) -> Int {
        guard let position = PythonSemantics.index(try arguments.int(index), count: items.count) else {
            throw RemoteError(.indexError, "IndexError: \(what)")
        }
        return position
    }

    private func slice(_ arguments: Arguments) throws(RemoteError) -> [Int] {
        try PythonSemantics.slice(
            start: PythonSemantics.optionalInt(arguments.optional(0), "start"),
            stop: PythonSemantics.optionalInt(arguments.optional(1), "stop"),
            step: PythonSemantics.optionalInt(arguments.optional(2), "step"), count: items.count)
    }

    func call(_ method: String, _ values: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue {
        try recorded(method, values, &changes) { (changes: inout ReferenceChanges) throws(RemoteError) -> WireValue in
            switch method {
            case "getitem":
                return items[try position(try Arguments(method, values, count: 1...1), 0)]
            case "setitem":
                let arguments = try Arguments(method, values, count: 2...2)
                let index = try position(arguments, 0, "list assignment index out of range")
                changes.drop(items[index])
                changes.adopt(arguments[1])
                items[index] = arguments[1]
                return .null
            case "delitem":
                let index = try position(try Arguments(method, values, count: 1...1), 0, "list assignment index out of range")
                changes.drop(items.remove(at: index))
                return .null
            case "getslice":
                let selected = try slice(try Arguments(method, values, count: 0...3))
                return .array(selected.map { items[$0] })
            case "setslice":
                let arguments = try Arguments(method, values, count: 4...4)
                guard let replacement = arguments[3].arrayValue else {
                    throw RemoteError(.wrongType, "setslice(): can only assign an array")
                }
                let step = try PythonSemantics.optionalInt(arguments[2], "step") ?? 1
                if step == 1 {
                    let count = items.count
                    func bound(_ value: Int?, _ fallback: Int) -> Int {
                        guard var value else { return fallback }
                        if value < 0 { value += count }
                        return min(max(value, 0), count)
                    }
                    let start = bound(try PythonSemantics.optionalInt(arguments[0], "start"), 0)
                    let stop = max(start, bound(try PythonSemantics.optionalInt(arguments[1], "stop"), count))
                    for item in items[start..<stop] { changes.drop(item) }
                    for item in replacement { changes.adopt(item) }
                    items.replaceSubrange(start..<stop, with: replacement)
                    return .null
                }
                let selected = try slice(arguments)
                guard selected.count == replacement.count else {
                    throw RemoteError(.valueError, "attempt to assign sequence of size \(replacement.count) to extended slice of size \(selected.count)")
                }
                for (index, item) in zip(selected, replacement) {
                    changes.drop(items[index])
                    changes.adopt(item)
                    items[index] = item
                }
                return .null
            case "delslice":
                let selected = Set(try slice(try Arguments(method, values, count: 0...3)))
                var kept: [WireValue] = []
                kept.reserveCapacity(items.count - selected.count)
                for (index, item) in items.enumerated() {
                    if selected.contains(index) { changes.drop(item) } else { kept.append(item) }
                }
                items = kept
                return .null
            case "append":
                let arguments = try Arguments(method, values, count: 1...1)
                changes.adopt(arguments[0])
                items.append(arguments[0])
                return .null
            case "extend":
                let arguments = try Arguments(method, values, count: 1...1)
                guard let more = arguments[0].arrayValue else {
                    throw RemoteError(.wrongType, "extend() needs an array, not \(arguments[0].kindDescription)")
                }
                for item in more { changes.adopt(item) }
                items.append(contentsOf: more)
                return .null
            case "insert":
                let arguments = try Arguments(method, values, count: 2...2)
                var index = try arguments.int(0)
                if index < 0 { index += items.count }
                index = min(max(index, 0), items.count)
                changes.adopt(arguments[1])
                items.insert(arguments[1], at: index)
                return .null
            case "pop":
                let arguments = try Arguments(method, values, count: 0...1)
                guard !items.isEmpty else { throw RemoteError(.indexError, "IndexError: pop from empty list") }
                let index = arguments.values.isEmpty ? items.count - 1 : try position(arguments, 0, "pop index out of range")
                let item = items.remove(at: index)
                changes.drop(item)
                return item
            case "remove":
                let arguments = try Arguments(method, values, count: 1...1)
                guard let index = items.firstIndex(where: { PythonSemantics.equal($0, arguments[0]) }) else {
                    throw RemoteError(.valueError, "ValueError: list.remove(x): x not in list")
                }
                changes.drop(items.remove(at: index))
                return .null
            case "index":
                let arguments = try Arguments(method, values, count: 1...3)
                let bounds = try PythonSemantics.slice(
                    start: PythonSemantics.optionalInt(arguments.optional(1), "start"),
                    stop: PythonSemantics.optionalInt(arguments.optional(2), "stop"), step: 1, count: items.count)
                guard let found = bounds.first(where: { PythonSemantics.equal(items[$0], arguments[0]) }) else {
                    throw RemoteError(.valueError, "ValueError: \(arguments[0].pythonRepr) is not in list")
                }
                return .integer(found)
            case "count":
                let arguments = try Arguments(method, values, count: 1...1)
                return .integer(items.filter { PythonSemantics.equal($0, arguments[0]) }.count)
            case "reverse":
                _ = try Arguments(method, values, count: 0...0)
                items.reverse()
                return .null
            case "sort":
                let arguments = try Arguments(method, values, count: 0...1)
                let reverse = arguments.values.isEmpty ? false : try arguments.bool(0)
                var failure: RemoteError?
                let sorted = items.sorted { a, b in
                    do {
                        return try reverse ? PythonSemantics.less(b, a) : PythonSemantics.less(a, b)
                    } catch {
                        failure = error as? RemoteError ?? RemoteError(.wrongType, "\(error)")
                        return false
                    }
                }
                if let failure { throw failure }
                items = sorted
                return .null
            case "len":
                _ = try Arguments(method, values, count: 0...0)
                return .integer(items.count)
            case "contains":
                let arguments = try Arguments(method, values, count: 1...1)
                return .bool(items.contains { PythonSemantics.equal($0, arguments[0]) })
            case "copy":
                _ = try Arguments(method, values, count: 0...0)
                return .array(items)
            case "clear":
                _ = try Arguments(method, values, count: 0...0)
                for item in items { changes.drop(item) }
                items = []
                return .null
            case "add":
                let arguments = try Arguments(method, values, count: 1...1)
                guard let other = arguments[0].arrayValue else {
                    throw RemoteError(.wrongType, "can only concatenate list (not \"\(arguments[0].kindDescription)\") to list")
                }
                return .array(items + other)
            case "mul":
                let times = try SharedList.repeatCount(Arguments(method, values, count: 1...1), limit: items.count)
                return .array(SharedList.repeated(items, times))
            case "imul":
                let times = try SharedList.repeatCount(Arguments(method, values, count: 1...1), limit: items.count)
                if times == 0 {
                    for item in items { changes.drop(item) }
                    items = []
                } else {
                    // The references of one copy, found once, are adopted once per extra copy.
                    let references = WireValue.array(items).objectIDs
                    if !references.isEmpty { for _ in 1..<times { changes.adopted += references } }
                    items = SharedList.repeated(items, times)
                }
                return .null
            default:
                throw unknownMethod(type, method)
            }
        }
    }

    func removeAll() -> [UInt64] {
        lock.withLock {
            var changes = ReferenceChanges()
            for item in items { changes.drop(item) }
            items = []
            return changes.dropped
        }
    }

    func referencedIDs() -> [UInt64] { lock.withLock { WireValue.array(items).objectIDs } }
}

// MARK: - Namespace

/// Python `Namespace`: named attributes.
final class SharedNamespace: PersistentObject, @unchecked Sendable {
    let type = ObjectType.namespace
    let lock = Lock()
    var journal: ObjectJournal?
    private var attributes: [String: WireValue] = [:]  // guarded by lock
    private var order: [String] = []

    init(attributes: [WirePair], changes: inout ReferenceChanges) throws(RemoteError) {
        for pair in attributes {
            guard let name = pair.key.stringValue else { throw RemoteError(.wrongType, "attribute names must be strings") }
            set(name, pair.value, &changes)
        }
    }

    var size: Int { lock.withLock { attributes.count } }

    func snapshot() -> KeptState {
        lock.withLock { KeptState(options: ["attrs": .map(order.map { WirePair(.string($0), attributes[$0]!) })]) }
    }

    private func set(_ name: String, _ value: WireValue, _ changes: inout ReferenceChanges) {
        changes.adopt(value)
        if let old = attributes.updateValue(value, forKey: name) { changes.drop(old) } else { order.append(name) }
    }

    func call(_ method: String, _ values: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue {
        try recorded(method, values, &changes) { (changes: inout ReferenceChanges) throws(RemoteError) -> WireValue in
            switch method {
            case "getattr":
                let name = try Arguments(method, values, count: 1...1).string(0)
                guard let value = attributes[name] else {
                    throw RemoteError(.attributeError, "AttributeError: 'Namespace' object has no attribute '\(name)'", detail: .string(name))
                }
                return value
            case "setattr":
                let arguments = try Arguments(method, values, count: 2...2)
                set(try arguments.string(0), arguments[1], &changes)
                return .null
            case "delattr":
                let name = try Arguments(method, values, count: 1...1).string(0)
                guard let old = attributes.removeValue(forKey: name) else {
                    throw RemoteError(.attributeError, "AttributeError: \(name)", detail: .string(name))
                }
                order.removeAll { $0 == name }
                changes.drop(old)
                return .null
            case "attrs":
                _ = try Arguments(method, values, count: 0...0)
                return .map(order.map { WirePair(.string($0), attributes[$0]!) })
            default:
                throw unknownMethod(type, method)
            }
        }
    }

    func removeAll() -> [UInt64] {
        lock.withLock {
            var changes = ReferenceChanges()
            for value in attributes.values { changes.drop(value) }
            attributes = [:]
            order = []
            return changes.dropped
        }
    }

    func referencedIDs() -> [UInt64] { lock.withLock { WireValue.array(Array(attributes.values)).objectIDs } }
}

// MARK: - Value and Array

/// Python's `array` typecodes: what a Value or Array element may hold.
struct TypeCode: Sendable {
    let code: Character
    private enum Kind { case integer(ClosedRange<Int64>), unsigned(UInt64), float, character, any }
    private let kind: Kind

    /// The code as `new` options give it (nil: any value).
    var wireValue: WireValue { code == "*" ? .null : .string(String(code)) }

    init(_ code: String?) throws(RemoteError) {
        guard let code else {
            self.code = "*"
            kind = .any
            return
        }
        guard code.count == 1, let character = code.first else {
            throw RemoteError(.valueError, "bad typecode '\(code)' (must be b, B, h, H, i, I, l, L, q, Q, f, d or u)")
        }
        self.code = character
        switch character {
        case "b": kind = .integer(Int64(Int8.min)...Int64(Int8.max))
        case "B": kind = .unsigned(UInt64(UInt8.max))
        case "h": kind = .integer(Int64(Int16.min)...Int64(Int16.max))
        case "H": kind = .unsigned(UInt64(UInt16.max))
        case "i": kind = .integer(Int64(Int32.min)...Int64(Int32.max))
        case "I": kind = .unsigned(UInt64(UInt32.max))
        case "l", "q": kind = .integer(Int64.min...Int64.max)
        case "L", "Q": kind = .unsigned(UInt64.max)
        case "f", "d": kind = .float
        case "u": kind = .character
        default: throw RemoteError(.valueError, "bad typecode '\(code)' (must be b, B, h, H, i, I, l, L, q, Q, f, d or u)")
        }
    }

    var zero: WireValue {
        switch kind {
        case .integer, .unsigned: 0
        case .float: 0.0
        case .character: ""
        case .any: .null
        }
    }

    /// The element as stored: checked against the typecode, numbers converted.
    func check(_ value: WireValue) throws(RemoteError) -> WireValue {
        switch kind {
        case .any:
            return value
        case .integer(let range):
            guard let number = value.int64Value else { throw mismatch(value, "an integer") }
            guard range.contains(number) else { throw RemoteError(.valueError, "\(number) is out of range for typecode '\(code)'") }
            return value
        case .unsigned(let maximum):
            guard let number = value.uint64Value else {
                if value.int64Value != nil { throw RemoteError(.valueError, "\(value) is out of range for typecode '\(code)'") }
                throw mismatch(value, "an integer")
            }
            guard number <= maximum else { throw RemoteError(.valueError, "\(number) is out of range for typecode '\(code)'") }
            return value
        case .float:
            guard let number = value.doubleValue else { throw mismatch(value, "a number") }
            return .double(number)
        case .character:
            guard let text = value.stringValue, text.count == 1 else { throw mismatch(value, "a one-character string") }
            return value
        }
    }

    private func mismatch(_ value: WireValue, _ expected: String) -> RemoteError {
        RemoteError(.wrongType, "typecode '\(code)' needs \(expected), not \(value.kindDescription)")
    }
}

/// Python `SyncManager.Value(typecode, value)`; without a typecode it holds any value.
final class SharedValue: PersistentObject, LockCarrier, @unchecked Sendable {
    let type = ObjectType.value
    let typeCode: TypeCode
    let lock = Lock()
    var journal: ObjectJournal?
    private var value: WireValue  // guarded by lock
    var lockObject: UInt64?  // guarded by lock

    init(typeCode: TypeCode, value: WireValue?, changes: inout ReferenceChanges) throws(RemoteError) {
        self.typeCode = typeCode
        self.value = try typeCode.check(value ?? typeCode.zero)
        changes.adopt(self.value)
    }

    var size: Int { 1 }

    func snapshot() -> KeptState { lock.withLock { KeptState(options: ["typecode": typeCode.wireValue, "value": value]) } }

    func call(_ method: String, _ values: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue {
        try recorded(method, values, &changes) { (changes: inout ReferenceChanges) throws(RemoteError) -> WireValue in
            switch method {
            case "get":
                _ = try Arguments(method, values, count: 0...0)
                return value
            case "set":
                let arguments = try Arguments(method, values, count: 1...1)
                let checked = try typeCode.check(arguments[0])
                changes.drop(value)
                changes.adopt(checked)
                value = checked
                return .null
            case "incr":
                let arguments = try Arguments(method, values, count: 1...1)
                value = try typeCode.check(try PythonSemantics.add(value, arguments[0]))
                return value
            case "cas":
                let arguments = try Arguments(method, values, count: 2...2)
                guard PythonSemantics.equal(value, arguments[0]) else { return false }
                let checked = try typeCode.check(arguments[1])
                changes.drop(value)
                changes.adopt(checked)
                value = checked
                return true
            default:
                throw unknownMethod(type, method)
            }
        }
    }

    func removeAll() -> [UInt64] {
        lock.withLock {
            defer {
                value = .null
                lockObject = nil
            }
            return value.objectIDs + (lockObject.map { [$0] } ?? [])
        }
    }

    func referencedIDs() -> [UInt64] { lock.withLock { value.objectIDs + (lockObject.map { [$0] } ?? []) } }
}

/// Python `SyncManager.Array(typecode, sequence)`: a fixed-length typed sequence.
final class SharedArray: PersistentObject, LockCarrier, @unchecked Sendable {
    let type = ObjectType.array
    let typeCode: TypeCode
    let lock = Lock()
    var journal: ObjectJournal?
    private var items: [WireValue]  // guarded by lock
    var lockObject: UInt64?  // guarded by lock

    init(typeCode: TypeCode, items: [WireValue]) throws(RemoteError) {
        self.typeCode = typeCode
        var checked: [WireValue] = []
        checked.reserveCapacity(items.count)
        for item in items { checked.append(try typeCode.check(item)) }
        self.items = checked
    }

    /// `count` zeros: nothing to check, and one allocation (Python `Array(typecode, size)`).
    init(typeCode: TypeCode, zeros count: Int) {
        self.typeCode = typeCode
        items = Array(repeating: typeCode.zero, count: count)
    }

    var size: Int { lock.withLock { items.count } }

    func snapshot() -> KeptState { lock.withLock { KeptState(options: ["typecode": typeCode.wireValue, "items": .array(items)]) } }

    private func position(_ arguments: Arguments) throws(RemoteError) -> Int {
        guard let position = PythonSemantics.index(try arguments.int(0), count: items.count) else {
            throw RemoteError(.indexError, "IndexError: array index out of range")
        }
        return position
    }

    func call(_ method: String, _ values: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue {
        try recorded(method, values, &changes) { (changes: inout ReferenceChanges) throws(RemoteError) -> WireValue in
            switch method {
            case "getitem":
                return items[try position(try Arguments(method, values, count: 1...1))]
            case "setitem":
                let arguments = try Arguments(method, values, count: 2...2)
                items[try position(arguments)] = try typeCode.check(arguments[1])
                return .null
            case "getslice":
                let arguments = try Arguments(method, values, count: 0...3)
                let selected = try PythonSemantics.slice(
                    start: PythonSemantics.optionalInt(arguments.optional(0), "start"),
                    stop: PythonSemantics.optionalInt(arguments.optional(1), "stop"),
                    step: PythonSemantics.optionalInt(arguments.optional(2), "step"), count: items.count)
                return .array(selected.map { items[$0] })
            case "setslice":
                let arguments = try Arguments(method, values, count: 4...4)
                guard let replacement = arguments[3].arrayValue else { throw RemoteError(.wrongType, "setslice(): can only assign an array") }
                let selected = try PythonSemantics.slice(
                    start: PythonSemantics.optionalInt(arguments[0], "start"), stop: PythonSemantics.optionalInt(arguments[1], "stop"),
                    step: PythonSemantics.optionalInt(arguments[2], "step"), count: items.count)
                guard selected.count == replacement.count else {
                    throw RemoteError(.valueError, "an Array cannot change size: the slice has \(selected.count) elements, the replacement \(replacement.count)")
                }
                var checked: [WireValue] = []
                for item in replacement { checked.append(try typeCode.check(item)) }
                for (index, item) in zip(selected, checked) { items[index] = item }
                return .null
            case "len":
                _ = try Arguments(method, values, count: 0...0)
                return .integer(items.count)
            case "copy":
                _ = try Arguments(method, values, count: 0...0)
                return .array(items)
            case "incr":
                let arguments = try Arguments(method, values, count: 2...2)
                let index = try position(arguments)
                items[index] = try typeCode.check(try PythonSemantics.add(items[index], arguments[1]))
                return items[index]
            default:
                throw unknownMethod(type, method)
            }
        }
    }

    func removeAll() -> [UInt64] {
        lock.withLock {
            defer {
                items = []
                lockObject = nil
            }
            return lockObject.map { [$0] } ?? []
        }
    }

    func referencedIDs() -> [UInt64] { lock.withLock { lockObject.map { [$0] } ?? [] } }
}

/// Python's `get_lock()` on Value and Array: an RLock object made on first use, which the
/// value keeps alive (one reference) for as long as it lives.
protocol LockCarrier: AnyObject {
    var lock: Lock { get }
    var lockObject: UInt64? { get set }
}

extension LockCarrier {
    func sharedLock(creating make: () throws(RemoteError) -> UInt64) throws(RemoteError) -> UInt64 {
        try lock.withLock { () throws(RemoteError) -> UInt64 in
            if let lockObject { return lockObject }
            let made = try make()
            lockObject = made
            return made
        }
    }
}
