import ColonyWire
import Threading

/// Python `set` semantics (Python 3.14's `SyncManager.set()`): members compare as Python's do
/// (`1`, `1.0` and `True` are one member), kept in insertion order. Operations that make a
/// new set (`union`, `|`...) answer a plain list of members; the `_update` ones change this set.
final class SharedSet: PersistentObject, @unchecked Sendable {
    let type = ObjectType.set
    let lock = Lock()
    var journal: ObjectJournal?
    private var members = DictState()  // the members are its keys; guarded by lock

    init(items: [WireValue], changes: inout ReferenceChanges) {
        for item in items where !members.contains(item) { members.store(item, .null, &changes) }
    }

    var size: Int { lock.withLock { members.positions.count } }

    func call(_ method: String, _ values: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue {
        try recorded(method, values, &changes) { (changes: inout ReferenceChanges) throws(RemoteError) -> WireValue in try perform(method, values, &changes) }
    }

    func removeAll() -> [UInt64] {
        lock.withLock { members.removeAll() }
    }

    func referencedIDs() -> [UInt64] { lock.withLock { members.referencedIDs } }

    func snapshot() -> KeptState { lock.withLock { KeptState(options: ["items": .array(list)]) } }

    private var list: [WireValue] { members.livePairs.map(\.key) }

    private func elements(_ arguments: Arguments, _ index: Int = 0) throws(RemoteError) -> [WireValue] {
        guard let items = arguments[index].arrayValue else {
            throw RemoteError(.wrongType, "\(arguments.method)() needs a list of members, not \(arguments[index].kindDescription)")
        }
        return items
    }

    private func keys(_ items: [WireValue]) -> Set<WireValue> { Set(items.map(PythonSemantics.dictKey)) }

    private func keep(_ shouldKeep: (WireValue) -> Bool, _ changes: inout ReferenceChanges) {
        for member in list where !shouldKeep(PythonSemantics.dictKey(member)) { _ = members.remove(member, &changes) }
    }

    private func perform(_ method: String, _ values: [WireValue], _ changes: inout ReferenceChanges) throws(RemoteError) -> WireValue {
        switch method {
        case "add":
            let arguments = try Arguments(method, values, count: 1...1)
            if !members.contains(arguments[0]) { members.store(arguments[0], .null, &changes) }
            return .null
        case "discard":
            let arguments = try Arguments(method, values, count: 1...1)
            _ = members.remove(arguments[0], &changes)
            return .null
        case "remove":
            let arguments = try Arguments(method, values, count: 1...1)
            guard members.remove(arguments[0], &changes) != nil else { throw members.keyError(arguments[0]) }
            return .null
        case "pop":
            _ = try Arguments(method, values, count: 0...0)
            guard let last = list.last else { throw RemoteError(.keyError, "KeyError: 'pop from an empty set'") }
            _ = members.remove(last, &changes)
            return last
        case "contains":
            let arguments = try Arguments(method, values, count: 1...1)
            return .bool(members.contains(arguments[0]))
        case "len":
            _ = try Arguments(method, values, count: 0...0)
            return .integer(members.positions.count)
        case "copy":
            _ = try Arguments(method, values, count: 0...0)
            return .array(list)
        case "clear":
            return try members.call("clear", values, &changes)
        case "page":
            guard let page = try members.call("page", values, &changes).arrayValue, page.count == 2 else { return [.null, []] }
            return [page[0], .array((page[1].arrayValue ?? []).compactMap { $0.arrayValue?.first })]
        case "update":
            for item in try elements(Arguments(method, values, count: 1...1)) where !members.contains(item) {
                members.store(item, .null, &changes)
            }
            return .null
        case "difference_update":
            let other = keys(try elements(Arguments(method, values, count: 1...1)))
            keep({ !other.contains($0) }, &changes)
            return .null
        case "intersection_update":
            let other = keys(try elements(Arguments(method, values, count: 1...1)))
            keep({ other.contains($0) }, &changes)
            return .null
        case "symmetric_difference_update":
            let items = try elements(Arguments(method, values, count: 1...1))
            var seen = Set<WireValue>()
            for item in items where seen.insert(PythonSemantics.dictKey(item)).inserted {
                if members.remove(item, &changes) == nil { members.store(item, .null, &changes) }
            }
            return .null
        case "union":
            let items = try elements(Arguments(method, values, count: 1...1))
            var seen = keys(list)
            return .array(list + items.filter { seen.insert(PythonSemantics.dictKey($0)).inserted })
        case "intersection":
            let other = keys(try elements(Arguments(method, values, count: 1...1)))
            return .array(list.filter { other.contains(PythonSemantics.dictKey($0)) })
        case "difference":
            let other = keys(try elements(Arguments(method, values, count: 1...1)))
            return .array(list.filter { !other.contains(PythonSemantics.dictKey($0)) })
        case "symmetric_difference":
            let items = try elements(Arguments(method, values, count: 1...1))
            let other = keys(items)
            var seen = keys(list)
            return .array(list.filter { !other.contains(PythonSemantics.dictKey($0)) } + items.filter { seen.insert(PythonSemantics.dictKey($0)).inserted })
        case "issubset":
            let other = keys(try elements(Arguments(method, values, count: 1...1)))
            return .bool(keys(list).isSubset(of: other))
        case "issuperset":
            let other = keys(try elements(Arguments(method, values, count: 1...1)))
            return .bool(keys(list).isSuperset(of: other))
        case "isdisjoint":
            let other = keys(try elements(Arguments(method, values, count: 1...1)))
            return .bool(keys(list).isDisjoint(with: other))
        default:
            throw unknownMethod(type, method)
        }
    }
}
