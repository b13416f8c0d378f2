import ColonyWire

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

/// A shared Namespace (Python `manager.Namespace()` proxy): attributes by name.
public struct NamespaceProxy: Proxy, Codable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `ns.name`; AttributeError when absent.
    public func get<T: Decodable>(_ name: String, as type: T.Type = T.self) async throws -> T {
        try handle.decode(T.self, try await handle.run(NamespaceCall.getAttribute(name)))
    }
    public func get<T: Decodable>(_ name: String, as type: T.Type = T.self) throws -> T {
        try handle.decode(T.self, try handle.runBlocking(NamespaceCall.getAttribute(name)))
    }
    /// Python `ns.name = value`.
    public func set<T: Encodable>(_ name: String, _ value: T) async throws { try await handle.run(NamespaceCall.setAttribute(name, wire(value))) }
    public func set<T: Encodable>(_ name: String, _ value: T) throws { try handle.runBlocking(NamespaceCall.setAttribute(name, wire(value))) }
    /// Python `del ns.name`.
    public func delete(_ name: String) async throws { try await handle.run(NamespaceCall.deleteAttribute(name)) }
    public func delete(_ name: String) throws { try handle.runBlocking(NamespaceCall.deleteAttribute(name)) }
    /// Python `vars(ns)`: names and raw values.
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
