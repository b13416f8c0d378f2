/// Turns any `Encodable` value into a `WireValue` directly, with no JSON step in between.
///
/// Structs and classes become maps keyed by property name, arrays become arrays,
/// `[UInt8]` becomes bytes, `ObjectRef` and `WireValue` pass through unchanged, and nil
/// optionals become `.null` (or are left out of a keyed container, as Codable does).
public struct WireValueEncoder: Sendable {
    /// Handed to every `encode(to:)` as `encoder.userInfo`.
    public var userInfo: [CodingUserInfoKey: any Sendable]

    public init(userInfo: [CodingUserInfoKey: any Sendable] = [:]) {
        self.userInfo = userInfo
    }

    public func encode<T: Encodable>(_ value: T) throws -> WireValue {
        try EncodingNode.encode(value, codingPath: [], userInfo: userInfo)
    }
}

/// Builds any `Decodable` value from a `WireValue`; the inverse of `WireValueEncoder`.
/// Integers convert between widths only when the value fits; anything else is a
/// `DecodingError` naming the coding path.
public struct WireValueDecoder: Sendable {
    /// Handed to every `init(from:)` as `decoder.userInfo` (Colony passes the `Manager` a
    /// value came from, so proxies inside it decode as live proxies).
    public var userInfo: [CodingUserInfoKey: any Sendable]

    public init(userInfo: [CodingUserInfoKey: any Sendable] = [:]) {
        self.userInfo = userInfo
    }

    public func decode<T: Decodable>(_ type: T.Type, from value: WireValue) throws -> T {
        try DecodingState(value: value, codingPath: [], userInfo: userInfo).decode(type)
    }
}

// MARK: - Encoding

/// One value under construction; containers append children to it.
private final class EncodingNode {
    enum Content {
        case unset
        case single(WireValue)
        case keyed([(String, EncodingNode)])
        case unkeyed([EncodingNode])
    }

    var content = Content.unset
    let userInfo: [CodingUserInfoKey: any Sendable]

    init(userInfo: [CodingUserInfoKey: any Sendable]) { self.userInfo = userInfo }

    var value: WireValue {
        switch content {
        case .unset: .map([])
        case .single(let value): value
        case .keyed(let entries): .map(entries.map { WirePair(.string($0.0), $0.1.value) })
        case .unkeyed(let elements): .array(elements.map(\.value))
        }
    }

    static func encode<T: Encodable>(_ value: T, codingPath: [any CodingKey], userInfo: [CodingUserInfoKey: any Sendable]) throws
        -> WireValue
    {
        if let special = specialValue(value) { return special }
        let node = EncodingNode(userInfo: userInfo)
        try value.encode(to: NodeEncoder(node: node, codingPath: codingPath))
        return node.value
    }

    /// Values encoded without a node: the wire's own types, and the common scalars (each as
    /// its single-value container would encode it, with no encoder built).
    static func specialValue<T: Encodable>(_ value: T) -> WireValue? {
        switch value {
        case let text as String: .string(text)
        case let number as Int: .integer(number)
        case let flag as Bool: .bool(flag)
        case let number as Double: .double(number)
        case let wire as WireValue: wire
        case let reference as ObjectRef: .objectRef(reference)
        case let bytes as [UInt8]: .bytes(bytes)
        default: nil
        }
    }

    func append(key: String, _ child: EncodingNode) {
        if case .keyed(var entries) = content {
            content = .unset
            if let index = entries.firstIndex(where: { $0.0 == key }) {
                entries[index].1 = child
            } else {
                entries.append((key, child))
            }
            content = .keyed(entries)
        } else {
            content = .keyed([(key, child)])
        }
    }

    func append(_ child: EncodingNode) {
        if case .unkeyed(var elements) = content {
            content = .unset
            elements.append(child)
            content = .unkeyed(elements)
        } else {
            content = .unkeyed([child])
        }
    }

    static func leaf(_ value: WireValue) -> EncodingNode {
        let node = EncodingNode(userInfo: [:])
        node.content = .single(value)
        return node
    }
}

private struct NodeEncoder: Encoder {
    let node: EncodingNode
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { node.userInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if case .keyed = node.content {} else { node.content = .keyed([]) }
        return KeyedEncodingContainer(KeyedNodeContainer(node: node, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .unkeyed = node.content {} else { node.content = .unkeyed([]) }
        return UnkeyedNodeContainer(node: node, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleNodeContainer(node: node, codingPath: codingPath)
    }
}

/// The scalar encodings every container shares.
private protocol ScalarEncoding {}

extension ScalarEncoding {
    func wire(_ value: Bool) -> WireValue { .bool(value) }
    func wire(_ value: String) -> WireValue { .string(value) }
    func wire(_ value: Double) -> WireValue { .double(value) }
    func wire(_ value: Float) -> WireValue { .double(Double(value)) }
    func wire<T: BinaryInteger>(integer value: T) -> WireValue { .integer(value) }
}

private struct KeyedNodeContainer<Key: CodingKey>: KeyedEncodingContainerProtocol, ScalarEncoding {
    let node: EncodingNode
    let codingPath: [any CodingKey]

    private func put(_ value: WireValue, _ key: Key) { node.append(key: key.stringValue, .leaf(value)) }

    mutating func encodeNil(forKey key: Key) throws { put(.null, key) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { put(wire(value), key) }
    mutating func encode(_ value: String, forKey key: Key) throws { put(wire(value), key) }
    mutating func encode(_ value: Double, forKey key: Key) throws { put(wire(value), key) }
    mutating func encode(_ value: Float, forKey key: Key) throws { put(wire(value), key) }
    mutating func encode(_ value: Int, forKey key: Key) throws { put(wire(integer: value), key) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { put(wire(integer: value), key) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { put(wire(integer: value), key) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { put(wire(integer: value), key) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { put(wire(integer: value), key) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { put(wire(integer: value), key) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { put(wire(integer: value), key) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { put(wire(integer: value), key) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { put(wire(integer: value), key) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { put(wire(integer: value), key) }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        put(try EncodingNode.encode(value, codingPath: codingPath + [key], userInfo: node.userInfo), key)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key)
        -> KeyedEncodingContainer<NestedKey>
    {
        let child = EncodingNode(userInfo: node.userInfo)
        node.append(key: key.stringValue, child)
        return NodeEncoder(node: child, codingPath: codingPath + [key]).container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = EncodingNode(userInfo: node.userInfo)
        node.append(key: key.stringValue, child)
        return NodeEncoder(node: child, codingPath: codingPath + [key]).unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder { superEncoder(forKey: Key(stringValue: "super")!) }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        let child = EncodingNode(userInfo: node.userInfo)
        node.append(key: key.stringValue, child)
        return NodeEncoder(node: child, codingPath: codingPath + [key])
    }
}

private struct UnkeyedNodeContainer: UnkeyedEncodingContainer, ScalarEncoding {
    let node: EncodingNode
    let codingPath: [any CodingKey]
    var count: Int {
        if case .unkeyed(let elements) = node.content { return elements.count }
        return 0
    }

    private func put(_ value: WireValue) { node.append(.leaf(value)) }
    private var nextKey: IndexKey { IndexKey(count) }

    mutating func encodeNil() throws { put(.null) }
    mutating func encode(_ value: Bool) throws { put(wire(value)) }
    mutating func encode(_ value: String) throws { put(wire(value)) }
    mutating func encode(_ value: Double) throws { put(wire(value)) }
    mutating func encode(_ value: Float) throws { put(wire(value)) }
    mutating func encode(_ value: Int) throws { put(wire(integer: value)) }
    mutating func encode(_ value: Int8) throws { put(wire(integer: value)) }
    mutating func encode(_ value: Int16) throws { put(wire(integer: value)) }
    mutating func encode(_ value: Int32) throws { put(wire(integer: value)) }
    mutating func encode(_ value: Int64) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt8) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt16) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt32) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt64) throws { put(wire(integer: value)) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        put(try EncodingNode.encode(value, codingPath: codingPath + [nextKey], userInfo: node.userInfo))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let child = EncodingNode(userInfo: node.userInfo)
        let path = codingPath + [nextKey]
        node.append(child)
        return NodeEncoder(node: child, codingPath: path).container(keyedBy: keyType)
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let child = EncodingNode(userInfo: node.userInfo)
        let path = codingPath + [nextKey]
        node.append(child)
        return NodeEncoder(node: child, codingPath: path).unkeyedContainer()
    }

    mutating func superEncoder() -> any Encoder {
        let child = EncodingNode(userInfo: node.userInfo)
        let path = codingPath + [nextKey]
        node.append(child)
        return NodeEncoder(node: child, codingPath: path)
    }
}

private struct SingleNodeContainer: SingleValueEncodingContainer, ScalarEncoding {
    let node: EncodingNode
    let codingPath: [any CodingKey]

    private func put(_ value: WireValue) { node.content = .single(value) }

    mutating func encodeNil() throws { put(.null) }
    mutating func encode(_ value: Bool) throws { put(wire(value)) }
    mutating func encode(_ value: String) throws { put(wire(value)) }
    mutating func encode(_ value: Double) throws { put(wire(value)) }
    mutating func encode(_ value: Float) throws { put(wire(value)) }
    mutating func encode(_ value: Int) throws { put(wire(integer: value)) }
    mutating func encode(_ value: Int8) throws { put(wire(integer: value)) }
    mutating func encode(_ value: Int16) throws { put(wire(integer: value)) }
    mutating func encode(_ value: Int32) throws { put(wire(integer: value)) }
    mutating func encode(_ value: Int64) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt8) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt16) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt32) throws { put(wire(integer: value)) }
    mutating func encode(_ value: UInt64) throws { put(wire(integer: value)) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        put(try EncodingNode.encode(value, codingPath: codingPath, userInfo: node.userInfo))
    }
}

/// The coding key of an array element.
private struct IndexKey: CodingKey {
    let intValue: Int?
    var stringValue: String { "Index \(intValue ?? 0)" }
    init(_ index: Int) { intValue = index }
    init?(stringValue: String) { nil }
    init?(intValue: Int) { self.intValue = intValue }
}

// MARK: - Decoding

private struct DecodingState {
    let value: WireValue
    let codingPath: [any CodingKey]
    let userInfo: [CodingUserInfoKey: any Sendable]

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        // The common scalars when the value is already of their kind (anything else takes
        // the general path, with its conversions and errors).
        switch value {
        case .string(let text) where type == String.self: return text as! T
        case .int(let number) where type == Int.self: return Int(number) as! T
        case .bool(let flag) where type == Bool.self: return flag as! T
        case .double(let number) where type == Double.self: return number as! T
        default: break
        }
        if type == WireValue.self { return value as! T }
        if type == ObjectRef.self {
            guard case .objectRef(let reference) = value else { throw mismatch(type) }
            return reference as! T
        }
        if type == [UInt8].self, case .bytes(let bytes) = value { return bytes as! T }
        return try T(from: ValueDecoder(state: self))
    }

    func mismatch(_ type: Any.Type) -> DecodingError {
        DecodingError.typeMismatch(
            type, .init(codingPath: codingPath, debugDescription: "expected \(type), found \(value.kindDescription)"))
    }

    func bool() throws -> Bool {
        guard case .bool(let flag) = value else { throw mismatch(Bool.self) }
        return flag
    }

    func string() throws -> String {
        guard case .string(let text) = value else { throw mismatch(String.self) }
        return text
    }

    func double() throws -> Double {
        guard let number = value.doubleValue else { throw mismatch(Double.self) }
        return number
    }

    func integer<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        let converted: T? =
            switch value {
            case .int(let number): T(exactly: number)
            case .uint(let number): T(exactly: number)
            case .double(let number): T(exactly: number)
            default: nil
            }
        guard let converted else {
            if value.int64Value != nil || value.uint64Value != nil || value.doubleValue != nil {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: codingPath, debugDescription: "\(value) does not fit in \(type)"))
            }
            throw mismatch(type)
        }
        return converted
    }
}

extension WireValue {
    /// "an integer", "a map", ...: for error messages.
    /// The value as Python's `repr` writes it (`'nope'`, `1`, `2.5`, `True`, `None`,
    /// `[1, 'a']`, `{'k': 1}`, `b'\\x00'`), for messages users read.
    public var pythonRepr: String {
        switch self {
        case .null: "None"
        case .bool(let flag): flag ? "True" : "False"
        case .int(let number): String(number)
        case .uint(let number): String(number)
        case .double(let number):
            number.isNaN ? "nan" : number.isInfinite ? (number < 0 ? "-inf" : "inf") : "\(number)"
        case .string(let text): WireValue.quoted(text)
        case .bytes(let bytes): "b'" + bytes.map { $0 >= 0x20 && $0 < 0x7f && $0 != 0x27 && $0 != 0x5c ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16).leftPadded(2) }.joined() + "'"
        case .array(let items): "[" + items.map(\.pythonRepr).joined(separator: ", ") + "]"
        case .map(let pairs): "{" + pairs.map { "\($0.key.pythonRepr): \($0.value.pythonRepr)" }.joined(separator: ", ") + "}"
        case .objectRef(let reference): "<\(reference.type.name) proxy #\(reference.id)>"
        }
    }

    /// Python's quoting of a string: single quotes unless the text holds one and no double.
    private static func quoted(_ text: String) -> String {
        let quote: Character = text.contains("'") && !text.contains("\"") ? "\"" : "'"
        var result = String(quote)
        for character in text {
            switch character {
            case quote, "\\": result += "\\" + String(character)
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            case "\r": result += "\\r"
            default: result.append(character)
            }
        }
        result.append(quote)
        return result
    }

    public var kindDescription: String {
        switch self {
        case .null: "nil"
        case .bool: "a bool"
        case .int, .uint: "an integer"
        case .double: "a float"
        case .string: "a string"
        case .bytes: "bytes"
        case .array: "an array"
        case .map: "a map"
        case .objectRef: "an object reference"
        }
    }
}

private struct ValueDecoder: Decoder {
    let state: DecodingState
    var codingPath: [any CodingKey] { state.codingPath }
    var userInfo: [CodingUserInfoKey: Any] { state.userInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .map(let pairs) = state.value else { throw state.mismatch([String: WireValue].self) }
        var entries: [String: WireValue] = [:]
        for pair in pairs {
            switch pair.key {
            case .string(let key): entries[key] = pair.value
            case .int(let key): entries[String(key)] = pair.value
            case .uint(let key): entries[String(key)] = pair.value
            default: throw state.mismatch(String.self)
            }
        }
        return KeyedDecodingContainer(KeyedValueContainer<Key>(entries: entries, codingPath: codingPath, userInfo: state.userInfo))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = state.value else { throw state.mismatch([WireValue].self) }
        return UnkeyedValueContainer(elements: elements, codingPath: codingPath, userInfo: state.userInfo)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleValueContainer(state: state)
    }
}

private struct KeyedValueContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let entries: [String: WireValue]
    let codingPath: [any CodingKey]
    let userInfo: [CodingUserInfoKey: any Sendable]

    var allKeys: [Key] { entries.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { entries[key.stringValue] != nil }

    private func state(_ key: Key) throws -> DecodingState {
        guard let value = entries[key.stringValue] else {
            throw DecodingError.keyNotFound(
                key, .init(codingPath: codingPath, debugDescription: "no value for '\(key.stringValue)'"))
        }
        return DecodingState(value: value, codingPath: codingPath + [key], userInfo: userInfo)
    }

    func decodeNil(forKey key: Key) throws -> Bool { try state(key).value == .null }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try state(key).bool() }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try state(key).string() }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try state(key).double() }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { Float(try state(key).double()) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try state(key).integer(type) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try state(key).integer(type) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try state(key).integer(type) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try state(key).integer(type) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try state(key).integer(type) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try state(key).integer(type) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try state(key).integer(type) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try state(key).integer(type) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try state(key).integer(type) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try state(key).integer(type) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try state(key).decode(type) }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
        -> KeyedDecodingContainer<NestedKey>
    {
        try ValueDecoder(state: try state(key)).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try ValueDecoder(state: try state(key)).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { try superDecoder(forKey: Key(stringValue: "super")!) }
    func superDecoder(forKey key: Key) throws -> any Decoder { ValueDecoder(state: try state(key)) }
}

private struct UnkeyedValueContainer: UnkeyedDecodingContainer {
    let elements: [WireValue]
    let codingPath: [any CodingKey]
    let userInfo: [CodingUserInfoKey: any Sendable]
    var currentIndex = 0

    init(elements: [WireValue], codingPath: [any CodingKey], userInfo: [CodingUserInfoKey: any Sendable]) {
        self.elements = elements
        self.codingPath = codingPath
        self.userInfo = userInfo
    }

    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    private mutating func next(_ type: Any.Type) throws -> DecodingState {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(
                type, .init(codingPath: codingPath, debugDescription: "the array has only \(elements.count) elements"))
        }
        defer { currentIndex += 1 }
        return DecodingState(value: elements[currentIndex], codingPath: codingPath + [IndexKey(currentIndex)], userInfo: userInfo)
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, elements[currentIndex] == .null else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try next(type).bool() }
    mutating func decode(_ type: String.Type) throws -> String { try next(type).string() }
    mutating func decode(_ type: Double.Type) throws -> Double { try next(type).double() }
    mutating func decode(_ type: Float.Type) throws -> Float { Float(try next(type).double()) }
    mutating func decode(_ type: Int.Type) throws -> Int { try next(type).integer(type) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try next(type).integer(type) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try next(type).integer(type) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try next(type).integer(type) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try next(type).integer(type) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try next(type).integer(type) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next(type).integer(type) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next(type).integer(type) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next(type).integer(type) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next(type).integer(type) }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next(type).decode(type) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try ValueDecoder(state: try next(type)).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try ValueDecoder(state: try next([WireValue].self)).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder { ValueDecoder(state: try next(WireValue.self)) }
}

private struct SingleValueContainer: SingleValueDecodingContainer {
    let state: DecodingState
    var codingPath: [any CodingKey] { state.codingPath }

    func decodeNil() -> Bool { state.value == .null }
    func decode(_ type: Bool.Type) throws -> Bool { try state.bool() }
    func decode(_ type: String.Type) throws -> String { try state.string() }
    func decode(_ type: Double.Type) throws -> Double { try state.double() }
    func decode(_ type: Float.Type) throws -> Float { Float(try state.double()) }
    func decode(_ type: Int.Type) throws -> Int { try state.integer(type) }
    func decode(_ type: Int8.Type) throws -> Int8 { try state.integer(type) }
    func decode(_ type: Int16.Type) throws -> Int16 { try state.integer(type) }
    func decode(_ type: Int32.Type) throws -> Int32 { try state.integer(type) }
    func decode(_ type: Int64.Type) throws -> Int64 { try state.integer(type) }
    func decode(_ type: UInt.Type) throws -> UInt { try state.integer(type) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try state.integer(type) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try state.integer(type) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try state.integer(type) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try state.integer(type) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try state.decode(type) }
}

// WireValue and ObjectRef are Codable so that they can sit inside user types; the wire
// coders above special-case them, other coders see this portable form.
extension WireValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let flag = try? container.decode(Bool.self) {
            self = .bool(flag)
        } else if let number = try? container.decode(Int64.self) {
            self = .int(number)
        } else if let number = try? container.decode(UInt64.self) {
            self = .uint(number)
        } else if let number = try? container.decode(Double.self) {
            self = .double(number)
        } else if let text = try? container.decode(String.self) {
            self = .string(text)
        } else if let elements = try? container.decode([WireValue].self) {
            self = .array(elements)
        } else {
            let entries = try container.decode([String: WireValue].self)
            self = .map(entries.sorted { $0.key < $1.key }.map { WirePair(.string($0.key), $0.value) })
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let flag): try container.encode(flag)
        case .int(let number): try container.encode(number)
        case .uint(let number): try container.encode(number)
        case .double(let number): try container.encode(number)
        case .string(let text): try container.encode(text)
        case .bytes(let bytes): try container.encode(bytes)
        case .array(let elements): try container.encode(elements)
        case .map(let pairs):
            var entries: [String: WireValue] = [:]
            for pair in pairs { entries[pair.key.stringValue ?? "\(pair.key)"] = pair.value }
            try container.encode(entries)
        case .objectRef(let reference): try container.encode(reference)
        }
    }
}

extension ObjectRef: Codable {
    private enum CodingKeys: String, CodingKey { case type, id }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(type: ObjectType(rawValue: try container.decode(UInt8.self, forKey: .type)), id: try container.decode(UInt64.self, forKey: .id))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(type.rawValue, forKey: .type)
        try container.encode(id, forKey: .id)
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
