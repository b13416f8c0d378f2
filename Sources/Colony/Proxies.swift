import ColonyWire
import Threading

// Every proxy method exists twice with the same name: `async` for Swift concurrency, and
// blocking for plain threads (Swift picks the async one inside async code). Both send the
// same typed call; the blocking one must not run on an event loop or a concurrency thread.

/// A shared dict (Python `manager.dict()` proxy). Keys and values are any `Codable` types.
public struct DictProxy<Key: Codable & Hashable & Sendable, Value: Codable & Sendable>: Proxy, Codable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `d[key]`; throws `RemoteError` with code `.keyError` when absent.
    public func get(_ key: Key) async throws -> Value { try handle.decode(Value.self, try await handle.run(DictCall.getItem(wire(key)))) }
    public func get(_ key: Key) throws -> Value { try handle.decode(Value.self, try handle.runBlocking(DictCall.getItem(wire(key)))) }
    /// Python `d.get(key)`: nil when absent.
    public func getIfPresent(_ key: Key) async throws -> Value? { try handle.decode(Value?.self, try await handle.run(DictCall.get(wire(key)))) }
    public func getIfPresent(_ key: Key) throws -> Value? { try handle.decode(Value?.self, try handle.runBlocking(DictCall.get(wire(key)))) }
    /// Python `d[key] = value`.
    public func set(_ key: Key, _ value: Value) async throws { try await handle.run(DictCall.setItem(wire(key), wire(value))) }
    public func set(_ key: Key, _ value: Value) throws { try handle.runBlocking(DictCall.setItem(wire(key), wire(value))) }
    /// Python `del d[key]`.
    public func delete(_ key: Key) async throws { try await handle.run(DictCall.delItem(wire(key))) }
    public func delete(_ key: Key) throws { try handle.runBlocking(DictCall.delItem(wire(key))) }
    /// Python `key in d`.
    public func contains(_ key: Key) async throws -> Bool { try await handle.run(DictCall.contains(wire(key))) }
    public func contains(_ key: Key) throws -> Bool { try handle.runBlocking(DictCall.contains(wire(key))) }
    /// Python `len(d)`.
    public func count() async throws -> Int { try await handle.run(DictCall.len()) }
    public func count() throws -> Int { try handle.runBlocking(DictCall.len()) }
    /// Python `d.keys()`.
    public func keys() async throws -> [Key] { try await handle.run(DictCall.keys()).map { try handle.decode(Key.self, $0) } }
    public func keys() throws -> [Key] { try handle.runBlocking(DictCall.keys()).map { try handle.decode(Key.self, $0) } }
    /// Python `d.values()`.
    public func values() async throws -> [Value] { try await handle.run(DictCall.values()).map { try handle.decode(Value.self, $0) } }
    public func values() throws -> [Value] { try handle.runBlocking(DictCall.values()).map { try handle.decode(Value.self, $0) } }
    /// Python `d.items()`, in insertion order.
    public func items() async throws -> [(Key, Value)] { try pairs(try await handle.run(DictCall.items())) }
    public func items() throws -> [(Key, Value)] { try pairs(try handle.runBlocking(DictCall.items())) }
    /// Python `d.pop(key)`; KeyError when absent.
    public func pop(_ key: Key) async throws -> Value { try handle.decode(Value.self, try await handle.run(DictCall.pop(wire(key)))) }
    public func pop(_ key: Key) throws -> Value { try handle.decode(Value.self, try handle.runBlocking(DictCall.pop(wire(key)))) }
    /// Python `d.popitem()`: the last inserted entry; KeyError when empty.
    public func popItem() async throws -> (Key, Value) { try pair(try await handle.run(DictCall.popItem())) }
    public func popItem() throws -> (Key, Value) { try pair(try handle.runBlocking(DictCall.popItem())) }
    /// Python `d.setdefault(key, default)`.
    public func setDefault(_ key: Key, _ value: Value) async throws -> Value {
        try handle.decode(Value.self, try await handle.run(DictCall.setDefault(wire(key), wire(value))))
    }
    public func setDefault(_ key: Key, _ value: Value) throws -> Value {
        try handle.decode(Value.self, try handle.runBlocking(DictCall.setDefault(wire(key), wire(value))))
    }
    /// Python `d.update(other)`.
    public func update(_ entries: [Key: Value]) async throws { try await handle.run(DictCall.update(DictProxy.wirePairs(entries))) }
    public func update(_ entries: [Key: Value]) throws { try handle.runBlocking(DictCall.update(DictProxy.wirePairs(entries))) }
    /// Python `d.clear()`.
    public func clear() async throws { try await handle.run(DictCall.clear()) }
    public func clear() throws { try handle.runBlocking(DictCall.clear()) }
    /// Python `d.copy()` (or `dict(d)`): a local copy, for comparing contents.
    public func copy() async throws -> [Key: Value] { try dictionary(try await handle.run(DictCall.copy())) }
    public func copy() throws -> [Key: Value] { try dictionary(try handle.runBlocking(DictCall.copy())) }
    /// Beyond Python: atomically adds `delta` to the number at `key` (absent keys start at 0)
    /// and returns the new value.
    public func increment(_ key: Key, by delta: Value) async throws -> Value {
        try handle.decode(Value.self, try await handle.run(DictCall.increment(wire(key), by: wire(delta))))
    }
    public func increment(_ key: Key, by delta: Value) throws -> Value {
        try handle.decode(Value.self, try handle.runBlocking(DictCall.increment(wire(key), by: wire(delta))))
    }
    /// Beyond Python: sets `key` to `new` only if it holds `expected` (nil: only if absent).
    public func compareAndSet(_ key: Key, expected: Value?, new: Value) async throws -> Bool {
        try await handle.run(DictCall.compareAndSet(wire(key), expected: expected.map(wire), new: wire(new)))
    }
    public func compareAndSet(_ key: Key, expected: Value?, new: Value) throws -> Bool {
        try handle.runBlocking(DictCall.compareAndSet(wire(key), expected: expected.map(wire), new: wire(new)))
    }
    /// Python `for k, v in d.items()` without copying the whole dict: entries arrive in pages.
    public func forEach(pageSize: Int = 1000, _ body: (Key, Value) throws -> Void) async throws {
        var cursor: UInt64?
        repeat {
            let page = try await handle.run(DictCall.page(cursor: cursor, count: pageSize))
            for pair in page.items { try body(try handle.decode(Key.self, pair.key), try handle.decode(Value.self, pair.value)) }
            cursor = page.cursor
        } while cursor != nil
    }

    func pair(_ pair: WirePair) throws -> (Key, Value) { (try handle.decode(Key.self, pair.key), try handle.decode(Value.self, pair.value)) }
    func pairs(_ pairs: [WirePair]) throws -> [(Key, Value)] { try pairs.map(pair) }
    func dictionary(_ pairs: [WirePair]) throws -> [Key: Value] {
        var result: [Key: Value] = [:]
        for entry in try self.pairs(pairs) { result[entry.0] = entry.1 }
        return result
    }
    static func wirePairs(_ entries: [Key: Value]) throws -> [WirePair] { try entries.map { WirePair(try wire($0.key), try wire($0.value)) } }
}

/// A shared list (Python `manager.list()` proxy).
public struct ListProxy<Element: Codable & Sendable>: Proxy, Codable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `l[i]` (negative indices count from the end); IndexError when out of range.
    public func get(_ index: Int) async throws -> Element { try handle.decode(Element.self, try await handle.run(ListCall.getItem(index))) }
    public func get(_ index: Int) throws -> Element { try handle.decode(Element.self, try handle.runBlocking(ListCall.getItem(index))) }
    /// Python `l[i] = value`.
    public func set(_ index: Int, _ value: Element) async throws { try await handle.run(ListCall.setItem(index, wire(value))) }
    public func set(_ index: Int, _ value: Element) throws { try handle.runBlocking(ListCall.setItem(index, wire(value))) }
    /// Python `del l[i]`.
    public func delete(_ index: Int) async throws { try await handle.run(ListCall.delItem(index)) }
    public func delete(_ index: Int) throws { try handle.runBlocking(ListCall.delItem(index)) }
    /// Python `l[start:stop:step]`.
    public func slice(_ start: Int? = nil, _ stop: Int? = nil, step: Int? = nil) async throws -> [Element] {
        try await handle.run(ListCall.getSlice(start, stop, step: step)).map { try handle.decode(Element.self, $0) }
    }
    public func slice(_ start: Int? = nil, _ stop: Int? = nil, step: Int? = nil) throws -> [Element] {
        try handle.runBlocking(ListCall.getSlice(start, stop, step: step)).map { try handle.decode(Element.self, $0) }
    }
    /// Python `l[start:stop:step] = values`.
    public func replace(_ start: Int?, _ stop: Int?, step: Int? = nil, with values: [Element]) async throws {
        try await handle.run(ListCall.setSlice(start, stop, step: step, values.map(wire)))
    }
    public func replace(_ start: Int?, _ stop: Int?, step: Int? = nil, with values: [Element]) throws {
        try handle.runBlocking(ListCall.setSlice(start, stop, step: step, values.map(wire)))
    }
    /// Python `del l[start:stop:step]`.
    public func deleteSlice(_ start: Int?, _ stop: Int?, step: Int? = nil) async throws {
        try await handle.run(ListCall.delSlice(start, stop, step: step))
    }
    public func deleteSlice(_ start: Int?, _ stop: Int?, step: Int? = nil) throws {
        try handle.runBlocking(ListCall.delSlice(start, stop, step: step))
    }
    /// Python `l.append(value)`.
    public func append(_ value: Element) async throws { try await handle.run(ListCall.append(wire(value))) }
    public func append(_ value: Element) throws { try handle.runBlocking(ListCall.append(wire(value))) }
    /// Python `l.extend(values)`.
    public func extend(_ values: [Element]) async throws { try await handle.run(ListCall.extend(values.map(wire))) }
    public func extend(_ values: [Element]) throws { try handle.runBlocking(ListCall.extend(values.map(wire))) }
    /// Python `l.insert(i, value)`.
    public func insert(_ value: Element, at index: Int) async throws { try await handle.run(ListCall.insert(index, wire(value))) }
    public func insert(_ value: Element, at index: Int) throws { try handle.runBlocking(ListCall.insert(index, wire(value))) }
    /// Python `l.pop(i=-1)`.
    public func pop(_ index: Int? = nil) async throws -> Element { try handle.decode(Element.self, try await handle.run(ListCall.pop(index))) }
    public func pop(_ index: Int? = nil) throws -> Element { try handle.decode(Element.self, try handle.runBlocking(ListCall.pop(index))) }
    /// Python `l.remove(value)`; ValueError when absent.
    public func remove(_ value: Element) async throws { try await handle.run(ListCall.remove(wire(value))) }
    public func remove(_ value: Element) throws { try handle.runBlocking(ListCall.remove(wire(value))) }
    /// Python `l.index(value, start, stop)`; ValueError when absent.
    public func index(of value: Element, start: Int? = nil, stop: Int? = nil) async throws -> Int {
        try await handle.run(ListCall.index(of: wire(value), start: start, stop: stop))
    }
    public func index(of value: Element, start: Int? = nil, stop: Int? = nil) throws -> Int {
        try handle.runBlocking(ListCall.index(of: wire(value), start: start, stop: stop))
    }
    /// Python `l.count(value)`.
    public func count(of value: Element) async throws -> Int { try await handle.run(ListCall.count(of: wire(value))) }
    public func count(of value: Element) throws -> Int { try handle.runBlocking(ListCall.count(of: wire(value))) }
    /// Python `l.reverse()`.
    public func reverse() async throws { try await handle.run(ListCall.reverse()) }
    public func reverse() throws { try handle.runBlocking(ListCall.reverse()) }
    /// Python `l.sort(reverse=False)` in the natural order of values.
    public func sort(reverse: Bool = false) async throws { try await handle.run(ListCall.sort(reverse: reverse)) }
    public func sort(reverse: Bool = false) throws { try handle.runBlocking(ListCall.sort(reverse: reverse)) }
    /// Python `len(l)`.
    public func count() async throws -> Int { try await handle.run(ListCall.len()) }
    public func count() throws -> Int { try handle.runBlocking(ListCall.len()) }
    /// Python `value in l`.
    public func contains(_ value: Element) async throws -> Bool { try await handle.run(ListCall.contains(wire(value))) }
    public func contains(_ value: Element) throws -> Bool { try handle.runBlocking(ListCall.contains(wire(value))) }
    /// Python `l[:]`: a local copy.
    public func copy() async throws -> [Element] { try await handle.run(ListCall.copy()).map { try handle.decode(Element.self, $0) } }
    public func copy() throws -> [Element] { try handle.runBlocking(ListCall.copy()).map { try handle.decode(Element.self, $0) } }
    /// Python `l.clear()`.
    public func clear() async throws { try await handle.run(ListCall.clear()) }
    public func clear() throws { try handle.runBlocking(ListCall.clear()) }
}

/// A shared Namespace (Python `manager.Namespace()` proxy): attributes by name. As in
/// Python, attributes whose names start with `_` belong to this proxy (and its copies) and
/// never reach the manager; a proxy made from a reference elsewhere starts without them.
public struct NamespaceProxy: Proxy, Codable {
    let handle: ProxyHandle
    private let local = LocalAttributes()
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    init(handle: ProxyHandle) { self.handle = handle }

    /// Python `ns.name`; AttributeError when absent.
    public func get<T: Decodable>(_ name: String, as type: T.Type = T.self) async throws -> T {
        if LocalAttributes.isLocal(name) { return try handle.decode(T.self, try local.get(name)) }
        return try handle.decode(T.self, try await handle.run(NamespaceCall.getAttribute(name)))
    }
    public func get<T: Decodable>(_ name: String, as type: T.Type = T.self) throws -> T {
        if LocalAttributes.isLocal(name) { return try handle.decode(T.self, try local.get(name)) }
        return try handle.decode(T.self, try handle.runBlocking(NamespaceCall.getAttribute(name)))
    }
    /// Python `ns.name = value`.
    public func set<T: Encodable>(_ name: String, _ value: T) async throws {
        if LocalAttributes.isLocal(name) { return local.set(name, try wire(value)) }
        try await handle.run(NamespaceCall.setAttribute(name, wire(value)))
    }
    public func set<T: Encodable>(_ name: String, _ value: T) throws {
        if LocalAttributes.isLocal(name) { return local.set(name, try wire(value)) }
        try handle.runBlocking(NamespaceCall.setAttribute(name, wire(value)))
    }
    /// Python `del ns.name`.
    public func delete(_ name: String) async throws {
        if LocalAttributes.isLocal(name) { return try local.delete(name) }
        try await handle.run(NamespaceCall.deleteAttribute(name))
    }
    public func delete(_ name: String) throws {
        if LocalAttributes.isLocal(name) { return try local.delete(name) }
        try handle.runBlocking(NamespaceCall.deleteAttribute(name))
    }
    /// Python `vars(ns)`: the shared names and raw values (not this proxy's `_` ones).
    public func attributes() async throws -> [String: WireValue] { NamespaceProxy.table(try await handle.run(NamespaceCall.attributes())) }
    public func attributes() throws -> [String: WireValue] { NamespaceProxy.table(try handle.runBlocking(NamespaceCall.attributes())) }

    static func table(_ pairs: [WirePair]) -> [String: WireValue] {
        var result: [String: WireValue] = [:]
        for pair in pairs { if let name = pair.key.stringValue { result[name] = pair.value } }
        return result
    }
}

/// A shared Value (Python `manager.Value(typecode, value)` proxy).
public struct ValueProxy<Element: Codable & Sendable>: Proxy, Codable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `v.value`.
    public func get() async throws -> Element { try handle.decode(Element.self, try await handle.run(ValueCall.get())) }
    public func get() throws -> Element { try handle.decode(Element.self, try handle.runBlocking(ValueCall.get())) }
    /// Python `v.value = x`.
    public func set(_ value: Element) async throws { try await handle.run(ValueCall.set(wire(value))) }
    public func set(_ value: Element) throws { try handle.runBlocking(ValueCall.set(wire(value))) }
    /// Beyond Python: atomic `v.value += delta`, returning the new value.
    public func increment(by delta: Element) async throws -> Element {
        try handle.decode(Element.self, try await handle.run(ValueCall.increment(by: wire(delta))))
    }
    public func increment(by delta: Element) throws -> Element {
        try handle.decode(Element.self, try handle.runBlocking(ValueCall.increment(by: wire(delta))))
    }
    /// Beyond Python: sets `new` only if the value equals `expected`.
    public func compareAndSet(expected: Element, new: Element) async throws -> Bool {
        try await handle.run(ValueCall.compareAndSet(expected: wire(expected), new: wire(new)))
    }
    public func compareAndSet(expected: Element, new: Element) throws -> Bool {
        try handle.runBlocking(ValueCall.compareAndSet(expected: wire(expected), new: wire(new)))
    }
}

/// A shared Array (Python `manager.Array(typecode, sequence)` proxy): fixed length, typed.
public struct ArrayProxy<Element: Codable & Sendable>: Proxy, Codable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `a[i]`.
    public func get(_ index: Int) async throws -> Element { try handle.decode(Element.self, try await handle.run(ArrayCall.getItem(index))) }
    public func get(_ index: Int) throws -> Element { try handle.decode(Element.self, try handle.runBlocking(ArrayCall.getItem(index))) }
    /// Python `a[i] = x`.
    public func set(_ index: Int, _ value: Element) async throws { try await handle.run(ArrayCall.setItem(index, wire(value))) }
    public func set(_ index: Int, _ value: Element) throws { try handle.runBlocking(ArrayCall.setItem(index, wire(value))) }
    /// Python `a[start:stop:step]`.
    public func slice(_ start: Int? = nil, _ stop: Int? = nil, step: Int? = nil) async throws -> [Element] {
        try await handle.run(ArrayCall.getSlice(start, stop, step: step)).map { try handle.decode(Element.self, $0) }
    }
    public func slice(_ start: Int? = nil, _ stop: Int? = nil, step: Int? = nil) throws -> [Element] {
        try handle.runBlocking(ArrayCall.getSlice(start, stop, step: step)).map { try handle.decode(Element.self, $0) }
    }
    /// Python `len(a)`.
    public func count() async throws -> Int { try await handle.run(ArrayCall.len()) }
    public func count() throws -> Int { try handle.runBlocking(ArrayCall.len()) }
    /// Python `a[:]`: a local copy.
    public func copy() async throws -> [Element] { try await handle.run(ArrayCall.copy()).map { try handle.decode(Element.self, $0) } }
    public func copy() throws -> [Element] { try handle.runBlocking(ArrayCall.copy()).map { try handle.decode(Element.self, $0) } }
    /// Beyond Python: atomic `a[i] += delta`.
    public func increment(_ index: Int, by delta: Element) async throws -> Element {
        try handle.decode(Element.self, try await handle.run(ArrayCall.increment(index, by: wire(delta))))
    }
    public func increment(_ index: Int, by delta: Element) throws -> Element {
        try handle.decode(Element.self, try handle.runBlocking(ArrayCall.increment(index, by: wire(delta))))
    }
}

/// A Namespace proxy's own attributes (names starting with `_`), shared by its copies.
final class LocalAttributes: @unchecked Sendable {
    private let lock = Threading.Lock()
    private var values: [String: WireValue] = [:]

    static func isLocal(_ name: String) -> Bool { name.hasPrefix("_") }

    func get(_ name: String) throws(RemoteError) -> WireValue {
        guard let value = lock.withLock({ values[name] }) else {
            throw RemoteError(.attributeError, "'NamespaceProxy' object has no attribute '\(name)' (names starting with _ stay in the proxy)")
        }
        return value
    }

    func set(_ name: String, _ value: WireValue) { lock.withLock { values[name] = value } }

    func delete(_ name: String) throws(RemoteError) {
        guard lock.withLock({ values.removeValue(forKey: name) }) != nil else {
            throw RemoteError(.attributeError, "'NamespaceProxy' object has no attribute '\(name)'")
        }
    }
}

// MARK: - set, and the operators of dict and list proxies

/// A shared set (Python 3.14 `manager.set()` proxy). Members are any `Codable & Hashable`
/// type; they compare as Python's do on the manager (1 and 1.0 are one member). Operators
/// that make a new set (`|`, `&`, `-`, `^`) run on the manager and return a local `Set`; the
/// assigning ones (`|=`, `&=`, `-=`, `^=`) change the shared set.
public struct SetProxy<Element: Codable & Hashable & Sendable>: Proxy, Codable, AsyncSequence {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `s.add(x)`.
    public func add(_ member: Element) async throws { try await handle.run(SetCall.add(wire(member))) }
    public func add(_ member: Element) throws { try handle.runBlocking(SetCall.add(wire(member))) }
    /// Python `s.discard(x)`.
    public func discard(_ member: Element) async throws { try await handle.run(SetCall.discard(wire(member))) }
    public func discard(_ member: Element) throws { try handle.runBlocking(SetCall.discard(wire(member))) }
    /// Python `s.remove(x)`; KeyError when absent.
    public func remove(_ member: Element) async throws { try await handle.run(SetCall.remove(wire(member))) }
    public func remove(_ member: Element) throws { try handle.runBlocking(SetCall.remove(wire(member))) }
    /// Python `s.pop()`; KeyError when empty.
    public func pop() async throws -> Element { try handle.decode(Element.self, try await handle.run(SetCall.pop())) }
    public func pop() throws -> Element { try handle.decode(Element.self, try handle.runBlocking(SetCall.pop())) }
    /// Python `x in s`.
    public func contains(_ member: Element) async throws -> Bool { try await handle.run(SetCall.contains(wire(member))) }
    public func contains(_ member: Element) throws -> Bool { try handle.runBlocking(SetCall.contains(wire(member))) }
    /// Python `len(s)`.
    public func count() async throws -> Int { try await handle.run(SetCall.len()) }
    public func count() throws -> Int { try handle.runBlocking(SetCall.len()) }
    /// Python `s.copy()` (or `set(s)`): a local copy.
    public func copy() async throws -> Set<Element> { try members(try await handle.run(SetCall.copy())) }
    public func copy() throws -> Set<Element> { try members(try handle.runBlocking(SetCall.copy())) }
    /// Python `s.clear()`.
    public func clear() async throws { try await handle.run(SetCall.clear()) }
    public func clear() throws { try handle.runBlocking(SetCall.clear()) }

    /// Python `s.update(other)`, `s.difference_update(other)`, ...: changes the shared set.
    public func formUnion(_ other: some Sequence<Element>) async throws { try await handle.run(SetCall.change(.union, wireAll(other))) }
    public func formUnion(_ other: some Sequence<Element>) throws { try handle.runBlocking(SetCall.change(.union, wireAll(other))) }
    public func formIntersection(_ other: some Sequence<Element>) async throws { try await handle.run(SetCall.change(.intersection, wireAll(other))) }
    public func formIntersection(_ other: some Sequence<Element>) throws { try handle.runBlocking(SetCall.change(.intersection, wireAll(other))) }
    public func subtract(_ other: some Sequence<Element>) async throws { try await handle.run(SetCall.change(.difference, wireAll(other))) }
    public func subtract(_ other: some Sequence<Element>) throws { try handle.runBlocking(SetCall.change(.difference, wireAll(other))) }
    public func formSymmetricDifference(_ other: some Sequence<Element>) async throws {
        try await handle.run(SetCall.change(.symmetricDifference, wireAll(other)))
    }
    public func formSymmetricDifference(_ other: some Sequence<Element>) throws {
        try handle.runBlocking(SetCall.change(.symmetricDifference, wireAll(other)))
    }

    /// Python `s.union(other)`, `s.intersection(other)`, ...: a new local set, made on the manager.
    public func combined(_ operation: SetOperation, with other: some Sequence<Element>) async throws -> Set<Element> {
        try members(try await handle.run(SetCall.combine(operation, wireAll(other))))
    }
    public func combined(_ operation: SetOperation, with other: some Sequence<Element>) throws -> Set<Element> {
        try members(try handle.runBlocking(SetCall.combine(operation, wireAll(other))))
    }
    /// Python `s.issubset(other)`, `s.issuperset(other)`, `s.isdisjoint(other)`.
    public func isRelated(_ relation: SetRelation, to other: some Sequence<Element>) async throws -> Bool {
        try await handle.run(SetCall.compare(relation, wireAll(other)))
    }
    public func isRelated(_ relation: SetRelation, to other: some Sequence<Element>) throws -> Bool {
        try handle.runBlocking(SetCall.compare(relation, wireAll(other)))
    }

    public static func | (set: SetProxy, other: Set<Element>) async throws -> Set<Element> { try await set.combined(.union, with: other) }
    public static func | (set: SetProxy, other: Set<Element>) throws -> Set<Element> { try set.combined(.union, with: other) }
    public static func & (set: SetProxy, other: Set<Element>) async throws -> Set<Element> { try await set.combined(.intersection, with: other) }
    public static func & (set: SetProxy, other: Set<Element>) throws -> Set<Element> { try set.combined(.intersection, with: other) }
    public static func - (set: SetProxy, other: Set<Element>) async throws -> Set<Element> { try await set.combined(.difference, with: other) }
    public static func - (set: SetProxy, other: Set<Element>) throws -> Set<Element> { try set.combined(.difference, with: other) }
    public static func ^ (set: SetProxy, other: Set<Element>) async throws -> Set<Element> {
        try await set.combined(.symmetricDifference, with: other)
    }
    public static func ^ (set: SetProxy, other: Set<Element>) throws -> Set<Element> { try set.combined(.symmetricDifference, with: other) }
    public static func |= (set: SetProxy, other: Set<Element>) async throws { try await set.formUnion(other) }
    public static func |= (set: SetProxy, other: Set<Element>) throws { try set.formUnion(other) }
    public static func &= (set: SetProxy, other: Set<Element>) async throws { try await set.formIntersection(other) }
    public static func &= (set: SetProxy, other: Set<Element>) throws { try set.formIntersection(other) }
    public static func -= (set: SetProxy, other: Set<Element>) async throws { try await set.subtract(other) }
    public static func -= (set: SetProxy, other: Set<Element>) throws { try set.subtract(other) }
    public static func ^= (set: SetProxy, other: Set<Element>) async throws { try await set.formSymmetricDifference(other) }
    public static func ^= (set: SetProxy, other: Set<Element>) throws { try set.formSymmetricDifference(other) }

    private func wireAll(_ members: some Sequence<Element>) throws -> [WireValue] { try members.map { try wire($0) } }
    private func members(_ values: [WireValue]) throws -> Set<Element> { Set(try values.map { try handle.decode(Element.self, $0) }) }

    /// `for try await member in set`: the members, fetched a page at a time (Python `iter(s)`).
    public func makeAsyncIterator() -> PagedIterator<Element> {
        PagedIterator { cursor in
            let page = try await handle.run(SetCall.page(cursor: cursor, count: PagedIterator<Element>.pageSize))
            return (try page.members.map { try handle.decode(Element.self, $0) }, page.cursor)
        }
    }
}

extension SetProxy {
    public init(from decoder: any Decoder) throws { handle = try decodeHandle(decoder, accepting: [.set]) }
}

/// Iterates a shared container a page at a time: each page is one call to the manager.
/// Changes made meanwhile may or may not be seen, as with Python's proxies; a dict that is
/// cleared during iteration ends it with a ValueError, as Python's "changed size" does.
public struct PagedIterator<Element: Sendable>: AsyncIteratorProtocol {
    static var pageSize: Int { 1000 }
    /// Fetches the page at a cursor (nil: the first): its elements and the next cursor.
    let fetch: @Sendable (UInt64?) async throws -> ([Element], UInt64?)
    private var buffered: [Element] = []
    private var position = 0
    private var cursor: UInt64?
    private var finished = false

    init(fetch: @escaping @Sendable (UInt64?) async throws -> ([Element], UInt64?)) { self.fetch = fetch }

    public mutating func next() async throws -> Element? {
        while position == buffered.count {
            guard !finished else { return nil }
            (buffered, cursor) = try await fetch(cursor)
            position = 0
            finished = cursor == nil
        }
        defer { position += 1 }
        return buffered[position]
    }
}

extension ListProxy: AsyncSequence {
    /// `for try await value in list`: the values, fetched a page (a slice) at a time.
    public func makeAsyncIterator() -> PagedIterator<Element> {
        PagedIterator { cursor in
            let start = Int(cursor ?? 0)
            let size = PagedIterator<Element>.pageSize
            let page = try await handle.run(ListCall.getSlice(start, start + size)).map { try handle.decode(Element.self, $0) }
            return (page, page.count < size ? nil : UInt64(start + size))
        }
    }

    /// Python `l + other`: a new local list, made on the manager.
    public static func + (list: ListProxy, other: [Element]) async throws -> [Element] {
        try await list.handle.run(ListCall.add(other.map(wire))).map { try list.handle.decode(Element.self, $0) }
    }
    public static func + (list: ListProxy, other: [Element]) throws -> [Element] {
        try list.handle.runBlocking(ListCall.add(other.map(wire))).map { try list.handle.decode(Element.self, $0) }
    }
    /// Python `l * n`: a new local list, made on the manager.
    public static func * (list: ListProxy, times: Int) async throws -> [Element] {
        try await list.handle.run(ListCall.multiply(times)).map { try list.handle.decode(Element.self, $0) }
    }
    public static func * (list: ListProxy, times: Int) throws -> [Element] {
        try list.handle.runBlocking(ListCall.multiply(times)).map { try list.handle.decode(Element.self, $0) }
    }
    /// Python `l += other`: extends the shared list.
    public static func += (list: ListProxy, other: [Element]) async throws { try await list.extend(other) }
    public static func += (list: ListProxy, other: [Element]) throws { try list.extend(other) }
    /// Python `l *= n`: repeats the shared list in place.
    public static func *= (list: ListProxy, times: Int) async throws { try await list.handle.run(ListCall.multiplyInPlace(times)) }
    public static func *= (list: ListProxy, times: Int) throws { try list.handle.runBlocking(ListCall.multiplyInPlace(times)) }
}

extension DictProxy: AsyncSequence {
    public typealias Element = (Key, Value)

    /// `for try await (key, value) in dict`: the entries, fetched a page at a time.
    public func makeAsyncIterator() -> PagedIterator<(Key, Value)> {
        PagedIterator { cursor in
            let page = try await handle.run(DictCall.page(cursor: cursor, count: PagedIterator<(Key, Value)>.pageSize))
            return (try page.items.map { (try handle.decode(Key.self, $0.key), try handle.decode(Value.self, $0.value)) }, page.cursor)
        }
    }

    /// Python `d | other`: the merged entries as a new local dict, made on the manager.
    public static func | (dict: DictProxy, other: [Key: Value]) async throws -> [Key: Value] {
        try dict.dictionary(try await dict.handle.run(DictCall.or(DictProxy.wirePairs(other))))
    }
    public static func | (dict: DictProxy, other: [Key: Value]) throws -> [Key: Value] {
        try dict.dictionary(try dict.handle.runBlocking(DictCall.or(DictProxy.wirePairs(other))))
    }
    /// Python `d |= other`: updates the shared dict.
    public static func |= (dict: DictProxy, other: [Key: Value]) async throws { try await dict.update(other) }
    public static func |= (dict: DictProxy, other: [Key: Value]) throws { try dict.update(other) }

    /// Python `d.fromkeys(keys, value)`: a new local dict (the shared one is not changed).
    public func fromKeys(_ keys: [Key], value: Value) async throws -> [Key: Value] {
        try dictionary(try await handle.run(DictCall.fromKeys(keys.map(wire), value: wire(value))))
    }
    public func fromKeys(_ keys: [Key], value: Value) throws -> [Key: Value] {
        try dictionary(try handle.runBlocking(DictCall.fromKeys(keys.map(wire), value: wire(value))))
    }
    /// Python `reversed(d)`: the keys, last inserted first.
    public func reversedKeys() async throws -> [Key] { try await handle.run(DictCall.reversed()).map { try handle.decode(Key.self, $0) } }
    public func reversedKeys() throws -> [Key] { try handle.runBlocking(DictCall.reversed()).map { try handle.decode(Key.self, $0) } }
}
