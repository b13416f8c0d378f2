import NIOCore

/// Bounds a decoder enforces before it allocates anything (SPEC.md, "Decoding limits").
public struct WireLimits: Hashable, Sendable {
    /// How deeply arrays and maps may nest.
    public var maxDepth: Int
    /// The largest string, bytes or extension payload, in bytes.
    public var maxBlobLength: Int
    /// The largest number of elements in one array or entries in one map.
    public var maxCollectionCount: Int

    public init(maxDepth: Int = 64, maxBlobLength: Int = Int(UInt32.max), maxCollectionCount: Int = Int(UInt32.max)) {
        self.maxDepth = maxDepth
        self.maxBlobLength = maxBlobLength
        self.maxCollectionCount = maxCollectionCount
    }

    public static let `default` = WireLimits()
}

/// Bytes that are not a valid MessagePack value of Colony's value model.
public struct WireFormatError: Error, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        /// The input ended inside a value.
        public static let truncated = Code("truncated")
        /// A length or count claims more than the input holds, or more than the limits allow.
        public static let lengthExceedsLimit = Code("lengthExceedsLimit")
        /// Arrays and maps nest deeper than `WireLimits.maxDepth`.
        public static let tooDeep = Code("tooDeep")
        /// A string is not valid UTF-8.
        public static let invalidUTF8 = Code("invalidUTF8")
        /// The byte 0xc1, which MessagePack never uses.
        public static let reservedByte = Code("reservedByte")
        /// An extension type Colony does not define, or a malformed one.
        public static let unsupportedExtension = Code("unsupportedExtension")
        /// Bytes were left over after the one value a body must hold.
        public static let trailingBytes = Code("trailingBytes")
        /// A well-formed value that is not the shape its message requires.
        public static let malformedMessage = Code("malformedMessage")
        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// MessagePack extension type codes Colony defines.
enum WireExtension {
    /// An object reference: fixext 8 holding the type code and a 56-bit object id.
    static let objectRef: Int8 = 1
    static let maxObjectID: UInt64 = (1 << 56) - 1
}

// MARK: - Encoding

extension ByteBuffer {
    /// Appends `value` in MessagePack, always in the shortest form (SPEC.md, "Values").
    /// Returns the number of bytes written.
    @discardableResult
    public mutating func writeWireValue(_ value: WireValue) -> Int {
        writeEncoded { $0.write(value) }
    }

    /// Runs `encode` straight on the buffer's free space, with one capacity check per field;
    /// output that outgrows that space moves to scratch memory and is copied in once.
    /// `reserving`: the free space to make first (the output's size, when it is known).
    @discardableResult
    mutating func writeEncoded(reserving: Int = 256, _ encode: (inout MessagePackWriter) -> Void) -> Int {
        var spilled: MessagePackWriter?
        let written = writeWithUnsafeMutableBytes(minimumWritableBytes: reserving) { space in
            var writer = MessagePackWriter(borrowing: space)
            encode(&writer)
            guard writer.ownsMemory else { return writer.offset }
            spilled = writer
            return 0
        }
        guard var writer = spilled else { return written }
        defer { writer.deallocate() }
        return writeBytes(UnsafeRawBufferPointer(start: writer.base, count: writer.offset))
    }
}

/// Writes MessagePack into memory it is lent; when that is full it moves what it wrote to
/// memory of its own, which grows as needed and which the owner frees with `deallocate()`.
struct MessagePackWriter {
    private(set) var base: UnsafeMutableRawPointer
    private var capacity: Int
    private(set) var offset = 0
    /// Whether `base` was allocated here (after the lent memory ran out).
    private(set) var ownsMemory = false

    init(borrowing memory: UnsafeMutableRawBufferPointer) {
        base = memory.baseAddress!
        capacity = memory.count
    }

    mutating func deallocate() {
        if ownsMemory { base.deallocate() }
        ownsMemory = false
    }

    /// A frame header (SPEC.md 2.1) whose body length `patchFrameLength` fills in later.
    mutating func frameHeader(kind: FrameKind, flags: FrameFlags, requestID: UInt64) {
        big(UInt32(0))
        byte(kind.rawValue)
        byte(flags.rawValue)
        big(UInt16(0))
        big(requestID)
    }

    /// Sets the length of the frame whose header starts at `start` to the bytes after it.
    mutating func patchFrameLength(headerAt start: Int) {
        base.storeBytes(of: UInt32(offset - start - Frame.headerSize).bigEndian, toByteOffset: start, as: UInt32.self)
    }

    @inline(__always) private mutating func reserve(_ count: Int) {
        if offset + count > capacity { grow(to: offset + count) }
    }

    private mutating func grow(to needed: Int) {
        let newCapacity = Swift.max(needed, capacity * 2)
        let newBase = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 8)
        newBase.copyMemory(from: base, byteCount: offset)
        if ownsMemory { base.deallocate() }
        base = newBase
        capacity = newCapacity
        ownsMemory = true
    }

    @inline(__always) private mutating func byte(_ value: UInt8) {
        reserve(1)
        base.storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
        offset += 1
    }

    @inline(__always) private mutating func big<T: FixedWidthInteger>(_ value: T) {
        reserve(MemoryLayout<T>.size)
        base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
    }

    private mutating func bytes(_ source: UnsafeRawBufferPointer) {
        guard let address = source.baseAddress, source.count > 0 else { return }
        reserve(source.count)
        (base + offset).copyMemory(from: address, byteCount: source.count)
        offset += source.count
    }

    mutating func write(_ value: borrowing WireValue) {
        switch value {
        case .null: byte(0xc0)
        case .bool(let flag): byte(flag ? 0xc3 : 0xc2)
        case .int(let number): write(integer: number)
        case .uint(let number): unsigned(number)
        case .double(let number):
            byte(0xcb)
            big(number.bitPattern)
        case .string(let text):
            let utf8 = text.utf8
            header(utf8.count, fix: 0xa0, fixLimit: 31, eight: 0xd9, sixteen: 0xda, thirtyTwo: 0xdb)
            if utf8.withContiguousStorageIfAvailable({ bytes(UnsafeRawBufferPointer($0)) }) == nil {
                for unit in utf8 { byte(unit) }
            }
        case .bytes(let data):
            header(data.count, fix: 0, fixLimit: -1, eight: 0xc4, sixteen: 0xc5, thirtyTwo: 0xc6)
            data.withUnsafeBytes { bytes($0) }
        case .array(let elements):
            write(array: elements)
        case .map(let pairs):
            mapHeader(pairs.count)
            pairs.withUnsafeBufferPointer { pairs in
                for index in pairs.indices {
                    write(pairs[index].key)
                    write(pairs[index].value)
                }
            }
        case .objectRef(let reference):
            precondition(reference.id <= WireExtension.maxObjectID, "object ids are 56-bit on the wire; managers never hand out more")
            byte(0xd7)
            byte(UInt8(bitPattern: WireExtension.objectRef))
            big(UInt64(reference.type.rawValue) << 56 | reference.id)
        }
    }

    mutating func write(array elements: [WireValue]) {
        arrayHeader(elements.count)
        elements.withUnsafeBufferPointer { elements in
            for index in elements.indices { write(elements[index]) }
        }
    }

    /// An array's header; its `count` elements follow.
    mutating func arrayHeader(_ count: Int) {
        header(count, fix: 0x90, fixLimit: 15, eight: nil, sixteen: 0xdc, thirtyTwo: 0xdd)
    }

    /// A map's header; its `count` entries follow.
    mutating func mapHeader(_ count: Int) {
        header(count, fix: 0x80, fixLimit: 15, eight: nil, sixteen: 0xde, thirtyTwo: 0xdf)
    }

    /// Bytes that already are MessagePack.
    mutating func raw(_ encoded: UnsafeRawBufferPointer) { bytes(encoded) }

    /// A request's body; a `call` is written from its fields, with no array built for it.
    mutating func write(_ request: Request) {
        guard case .call(let object, let method, let arguments) = request else {
            write(request.wireValue)
            return
        }
        byte(0x94)
        write(.string("call"))
        write(.integer(object))
        write(.string(method))
        write(array: arguments)
    }

    private mutating func unsigned(_ number: UInt64) {
        switch number {
        case 0...0x7f: byte(UInt8(number))
        case 0x80...0xff:
            byte(0xcc)
            byte(UInt8(number))
        case 0x100...0xffff:
            byte(0xcd)
            big(UInt16(number))
        case 0x1_0000...0xffff_ffff:
            byte(0xce)
            big(UInt32(number))
        default:
            byte(0xcf)
            big(number)
        }
    }

    /// An integer, in its shortest form.
    @inline(__always) mutating func write(integer number: Int64) {
        if number >= 0 { unsigned(UInt64(number)) } else { negative(number) }
    }

    private mutating func negative(_ number: Int64) {
        switch number {
        case -32 ..< 0: byte(UInt8(bitPattern: Int8(number)))
        case Int64(Int8.min) ..< -32:
            byte(0xd0)
            byte(UInt8(bitPattern: Int8(number)))
        case Int64(Int16.min) ..< Int64(Int8.min):
            byte(0xd1)
            big(Int16(number))
        case Int64(Int32.min) ..< Int64(Int16.min):
            byte(0xd2)
            big(Int32(number))
        default:
            byte(0xd3)
            big(number)
        }
    }

    private mutating func header(_ length: Int, fix: UInt8, fixLimit: Int, eight: UInt8?, sixteen: UInt8, thirtyTwo: UInt8) {
        precondition(length <= Int(UInt32.max), "MessagePack lengths are 32-bit; chunk larger values")
        if length <= fixLimit {
            byte(fix | UInt8(length))
        } else if let eight, length <= 0xff {
            byte(eight)
            byte(UInt8(length))
        } else if length <= 0xffff {
            byte(sixteen)
            big(UInt16(length))
        } else {
            byte(thirtyTwo)
            big(UInt32(length))
        }
    }
}

extension WireValue {
    /// This value's MessagePack bytes.
    public func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeWireValue(self)
        return buffer
    }

    /// Decodes exactly one value from `bytes`; leftover bytes are an error.
    public init(messagePack bytes: some Collection<UInt8>, limits: WireLimits = .default) throws {
        var buffer = ByteBuffer(bytes: bytes)
        self = try buffer.readWireValue(limits: limits)
        if buffer.readableBytes > 0 {
            throw WireFormatError(.trailingBytes, "\(buffer.readableBytes) bytes follow the value")
        }
    }
}

// MARK: - Decoding

extension ByteBuffer {
    /// Reads one MessagePack value. On success the reader index moves past it; on any error
    /// (including input that ends early) the buffer is left untouched. Lengths are checked
    /// against the bytes present and `limits` before anything is allocated.
    public mutating func readWireValue(limits: WireLimits = .default) throws -> WireValue {
        let (value, consumed) = try withUnsafeReadableBytes { raw in
            var reader = MessagePackReader(bytes: raw.bindMemory(to: UInt8.self), limits: limits)
            let value = try reader.readValue(depth: 0)
            return (value, reader.offset)
        }
        moveReaderIndex(forwardBy: consumed)
        return value
    }
}

/// A cursor over MessagePack bytes.
struct MessagePackReader {
    let bytes: UnsafeBufferPointer<UInt8>
    let limits: WireLimits
    var offset = 0

    init(bytes: UnsafeBufferPointer<UInt8>, limits: WireLimits) {
        self.bytes = bytes
        self.limits = limits
    }

    private var remaining: Int { bytes.count - offset }

    private mutating func need(_ count: Int) throws {
        if count > remaining {
            throw WireFormatError(.truncated, "need \(count) more bytes at offset \(offset), have \(remaining)")
        }
    }

    private mutating func byte() throws -> UInt8 {
        try need(1)
        defer { offset += 1 }
        return bytes[offset]
    }

    private mutating func big<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let size = MemoryLayout<T>.size
        try need(size)
        var value: T = 0
        for index in offset ..< offset + size { value = value << 8 | T(bytes[index]) }
        offset += size
        return value
    }

    private mutating func blob(_ length: Int) throws -> UnsafeBufferPointer<UInt8> {
        guard length <= limits.maxBlobLength else {
            throw WireFormatError(.lengthExceedsLimit, "a \(length)-byte value exceeds the \(limits.maxBlobLength)-byte limit")
        }
        guard length <= remaining else {
            throw WireFormatError(.truncated, "a \(length)-byte value at offset \(offset) but only \(remaining) bytes remain")
        }
        defer { offset += length }
        return UnsafeBufferPointer(start: bytes.baseAddress! + offset, count: length)
    }

    private func checkDepth(_ depth: Int) throws {
        guard depth <= limits.maxDepth else {
            throw WireFormatError(.tooDeep, "values nest deeper than \(limits.maxDepth) levels")
        }
    }

    private mutating func string(_ length: Int) throws -> WireValue {
        let utf8 = try blob(length)
        // Most strings are ASCII, which is always valid UTF-8: skip the general validation.
        if isASCII(utf8) { return .string(String(decoding: utf8, as: UTF8.self)) }
        guard let text = String(validating: utf8, as: UTF8.self) else {
            throw WireFormatError(.invalidUTF8, "a string at offset \(offset - length) is not valid UTF-8")
        }
        return .string(text)
    }

    private func isASCII(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var highBits: UInt8 = 0
        for byte in bytes { highBits |= byte }
        return highBits < 0x80
    }

    /// Checks a declared element count against the limits and the bytes left: every element
    /// takes at least one byte (`perElement` bytes for map entries).
    private func checkCount(_ count: Int, perElement: Int) throws {
        guard count <= limits.maxCollectionCount else {
            throw WireFormatError(.lengthExceedsLimit, "\(count) elements exceed the limit of \(limits.maxCollectionCount)")
        }
        guard count <= remaining / perElement else {
            throw WireFormatError(.truncated, "\(count) elements declared but only \(remaining) bytes remain")
        }
    }

    private mutating func array(_ count: Int, depth: Int) throws -> WireValue {
        try checkCount(count, perElement: 1)
        var elements: [WireValue] = []
        elements.reserveCapacity(count)
        for _ in 0 ..< count { elements.append(try readValue(depth: depth + 1)) }
        return .array(elements)
    }

    private mutating func map(_ count: Int, depth: Int) throws -> WireValue {
        try checkCount(count, perElement: 2)
        var pairs: [WirePair] = []
        pairs.reserveCapacity(count)
        for _ in 0 ..< count {
            let key = try readValue(depth: depth + 1)
            pairs.append(WirePair(key, try readValue(depth: depth + 1)))
        }
        return .map(pairs)
    }

    private mutating func ext(_ length: Int) throws -> WireValue {
        let type = Int8(bitPattern: try byte())
        let payload = try blob(length)
        guard type == WireExtension.objectRef, length == 8 else {
            throw WireFormatError(.unsupportedExtension, "extension type \(type) with \(length) bytes is not part of Colony's value model")
        }
        var word: UInt64 = 0
        for byte in payload { word = word << 8 | UInt64(byte) }
        return .objectRef(ObjectRef(type: ObjectType(rawValue: UInt8(word >> 56)), id: word & WireExtension.maxObjectID))
    }

    mutating func readValue(depth: Int) throws -> WireValue {
        try checkDepth(depth)
        let start = offset
        let lead = try byte()
        do {
            switch lead {
            case 0x00...0x7f: return .int(Int64(lead))
            case 0x80...0x8f: return try map(Int(lead & 0x0f), depth: depth)
            case 0x90...0x9f: return try array(Int(lead & 0x0f), depth: depth)
            case 0xa0...0xbf: return try string(Int(lead & 0x1f))
            case 0xc0: return .null
            case 0xc1: throw WireFormatError(.reservedByte, "byte 0xc1 at offset \(start) is never used by MessagePack")
            case 0xc2: return .bool(false)
            case 0xc3: return .bool(true)
            case 0xc4: return .bytes(Array(try blob(Int(try big(UInt8.self)))))
            case 0xc5: return .bytes(Array(try blob(Int(try big(UInt16.self)))))
            case 0xc6: return .bytes(Array(try blob(Int(try big(UInt32.self)))))
            case 0xc7: return try ext(Int(try big(UInt8.self)))
            case 0xc8: return try ext(Int(try big(UInt16.self)))
            case 0xc9: return try ext(Int(try big(UInt32.self)))
            case 0xca: return .double(Double(Float(bitPattern: try big(UInt32.self))))
            case 0xcb: return .double(Double(bitPattern: try big(UInt64.self)))
            case 0xcc: return .int(Int64(try big(UInt8.self)))
            case 0xcd: return .int(Int64(try big(UInt16.self)))
            case 0xce: return .int(Int64(try big(UInt32.self)))
            case 0xcf: return .integer(try big(UInt64.self))
            case 0xd0: return .int(Int64(Int8(bitPattern: try big(UInt8.self))))
            case 0xd1: return .int(Int64(Int16(bitPattern: try big(UInt16.self))))
            case 0xd2: return .int(Int64(Int32(bitPattern: try big(UInt32.self))))
            case 0xd3: return .int(Int64(bitPattern: try big(UInt64.self)))
            case 0xd4: return try ext(1)
            case 0xd5: return try ext(2)
            case 0xd6: return try ext(4)
            case 0xd7: return try ext(8)
            case 0xd8: return try ext(16)
            case 0xd9: return try string(Int(try big(UInt8.self)))
            case 0xda: return try string(Int(try big(UInt16.self)))
            case 0xdb: return try string(Int(try big(UInt32.self)))
            case 0xdc: return try array(Int(try big(UInt16.self)), depth: depth)
            case 0xdd: return try array(Int(try big(UInt32.self)), depth: depth)
            case 0xde: return try map(Int(try big(UInt16.self)), depth: depth)
            case 0xdf: return try map(Int(try big(UInt32.self)), depth: depth)
            default: return .int(Int64(Int8(bitPattern: lead)))  // 0xe0...0xff: negative fixint
            }
        } catch {
            offset = start
            throw error
        }
    }
}

extension MessagePackReader {
    /// Reads an array's header at nesting level `depth`; returns its element count.
    mutating func arrayHeader(depth: Int) throws -> Int {
        try checkDepth(depth)
        return try containerHeader(fix: 0x90, sixteen: 0xdc, thirtyTwo: 0xdd, perElement: 1, "an array")
    }

    /// Reads a map's header; returns its entry count.
    mutating func mapHeader() throws -> Int {
        try containerHeader(fix: 0x80, sixteen: 0xde, thirtyTwo: 0xdf, perElement: 2, "a map")
    }

    /// A container's header, with its count checked against the limits and the bytes left;
    /// on any error the reader stays where it was.
    private mutating func containerHeader(fix: UInt8, sixteen: UInt8, thirtyTwo: UInt8, perElement: Int, _ name: String) throws -> Int {
        let start = offset
        do {
            let count: Int
            switch try byte() {
            case let lead where lead & 0xf0 == fix: count = Int(lead & 0x0f)
            case sixteen: count = Int(try big(UInt16.self))
            case thirtyTwo: count = Int(try big(UInt32.self))
            default: throw WireFormatError(.malformedMessage, "\(name) was expected at offset \(start)")
            }
            try checkCount(count, perElement: perElement)
            return count
        } catch {
            offset = start
            throw error
        }
    }

    /// Moves past one value, checking it by the rules `readValue` applies (limits, depth,
    /// UTF-8, extension types) without building it. Returns whether it holds an object
    /// reference.
    @discardableResult
    mutating func skipValue(depth: Int) throws -> Bool {
        try checkDepth(depth)
        let start = offset
        let lead = try byte()
        do {
            switch lead {
            case 0x00...0x7f, 0xc0, 0xc2, 0xc3, 0xe0...0xff: return false
            case 0x80...0x8f: return try skipEntries(Int(lead & 0x0f) * 2, perElement: 2, depth: depth)
            case 0x90...0x9f: return try skipEntries(Int(lead & 0x0f), perElement: 1, depth: depth)
            case 0xa0...0xbf: try skipString(Int(lead & 0x1f))
            case 0xc1: throw WireFormatError(.reservedByte, "byte 0xc1 at offset \(start) is never used by MessagePack")
            case 0xc4: _ = try blob(Int(try big(UInt8.self)))
            case 0xc5: _ = try blob(Int(try big(UInt16.self)))
            case 0xc6: _ = try blob(Int(try big(UInt32.self)))
            case 0xc7: _ = try ext(Int(try big(UInt8.self)))
            case 0xc8: _ = try ext(Int(try big(UInt16.self)))
            case 0xc9: _ = try ext(Int(try big(UInt32.self)))
            case 0xca, 0xce, 0xd2: try skip(4)
            case 0xcb, 0xcf, 0xd3: try skip(8)
            case 0xcc, 0xd0: try skip(1)
            case 0xcd, 0xd1: try skip(2)
            case 0xd4: _ = try ext(1)
            case 0xd5: _ = try ext(2)
            case 0xd6: _ = try ext(4)
            case 0xd7: _ = try ext(8)
            case 0xd8: _ = try ext(16)
            case 0xd9: try skipString(Int(try big(UInt8.self)))
            case 0xda: try skipString(Int(try big(UInt16.self)))
            case 0xdb: try skipString(Int(try big(UInt32.self)))
            case 0xdc: return try skipEntries(Int(try big(UInt16.self)), perElement: 1, depth: depth)
            case 0xdd: return try skipEntries(Int(try big(UInt32.self)), perElement: 1, depth: depth)
            case 0xde: return try skipEntries(Int(try big(UInt16.self)) * 2, perElement: 2, depth: depth)
            default: return try skipEntries(Int(try big(UInt32.self)) * 2, perElement: 2, depth: depth)  // 0xdf
            }
            // What is left are strings, binaries, numbers and extensions; `ext` lets only
            // object references through.
            return (0xc7...0xc9).contains(lead) || (0xd4...0xd8).contains(lead)
        } catch {
            offset = start
            throw error
        }
    }

    private mutating func skip(_ count: Int) throws {
        try need(count)
        offset += count
    }

    private mutating func skipString(_ length: Int) throws {
        let utf8 = try blob(length)
        if !isASCII(utf8), String(validating: utf8, as: UTF8.self) == nil {
            throw WireFormatError(.invalidUTF8, "a string at offset \(offset - length) is not valid UTF-8")
        }
    }

    /// Skips `count` values, the elements of an array or (counted twice) the entries of a map.
    private mutating func skipEntries(_ count: Int, perElement: Int, depth: Int) throws -> Bool {
        try checkCount(count / perElement, perElement: perElement)
        var references = false
        for _ in 0..<count where try skipValue(depth: depth + 1) { references = true }
        return references
    }
}

extension MessagePackReader {
    /// `["call", object id, method, [arguments]]`, the request nearly every frame carries,
    /// read field by field (no four-element array or operation string is built). Nil for any
    /// other bytes, including malformed ones, which the general decoder then reads and reports.
    /// A reader just past `["call", ` (a fixarray of 4, then the fixstr "call"), or nil when
    /// the bytes do not start so.
    static func afterCallPrefix(_ raw: UnsafeRawBufferPointer, limits: WireLimits) -> MessagePackReader? {
        guard raw.count > 6, raw[0] == 0x94, raw[1] == 0xa4, raw[2] == 0x63, raw[3] == 0x61, raw[4] == 0x6c, raw[5] == 0x6c else { return nil }
        var reader = MessagePackReader(bytes: raw.bindMemory(to: UInt8.self), limits: limits)
        reader.offset = 6
        return reader
    }

    static func call(in raw: UnsafeRawBufferPointer, limits: WireLimits) -> Request? {
        guard var reader = afterCallPrefix(raw, limits: limits) else { return nil }
        guard let object = (try? reader.readValue(depth: 1))?.uint64Value,
            case .string(let method)? = try? reader.readValue(depth: 1),
            case .array(let arguments)? = try? reader.readValue(depth: 1),
            reader.offset == raw.count
        else { return nil }
        return .call(object: object, method: method, arguments: arguments)
    }
}
