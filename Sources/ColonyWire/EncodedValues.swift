import NIOCore

/// Values kept as their MessagePack bytes, back to back, with where each one ends. A pool's
/// calls and results cross the manager this way: each value is checked once, when it is
/// scanned (by the rules decoding applies), and from then on only copied, never rebuilt as
/// a `WireValue` per call.
public struct EncodedValues: Hashable, Sendable {
    /// The values' encodings, back to back.
    public private(set) var bytes: [UInt8] = []
    /// Where each value's encoding ends in `bytes`.
    private var ends: [Int] = []
    /// Whether some value may hold an object reference (never false when one does).
    public private(set) var holdsReferences = false

    public init() {}

    /// `values`, encoded.
    public init(_ values: [WireValue]) {
        var buffer = ByteBuffer()
        var ends: [Int] = []
        ends.reserveCapacity(values.count)
        buffer.writeEncoded { writer in
            for value in values {
                writer.write(value)
                ends.append(writer.offset)
            }
        }
        self.ends = ends
        bytes = Array(buffer.readableBytesView)
        holdsReferences = values.contains { $0.holdsReference }
    }

    // Concrete types, not `some Sequence`: a generic entry point called from another module
    // runs unspecialized, several times slower than the encoding itself.

    /// Integers, encoded straight from them (no `WireValue` each).
    public init(integers: [Int]) { self.init(integerCollection: integers) }
    public init(integers: Range<Int>) { self.init(integerCollection: integers) }
    public init(integers: ArraySlice<Int>) { self.init(integerCollection: integers) }

    private init<C: Collection<Int>>(integerCollection numbers: C) {
        var buffer = ByteBuffer()
        var ends = [Int](repeating: 0, count: numbers.count)
        ends.withUnsafeMutableBufferPointer { ends in
            // Five bytes hold any integer below 2^32: no spill for the usual inputs.
            buffer.writeEncoded(reserving: numbers.count * 5 + 256) { writer in
                var index = 0
                for number in numbers {
                    writer.write(integer: Int64(number))
                    ends[index] = writer.offset
                    index += 1
                }
            }
        }
        self.ends = ends
        bytes = Array(buffer.readableBytesView)
    }

    /// Strings, encoded straight from them.
    public init(strings: [String]) { self.init(encoding: strings, WireValue.string) }
    public init(strings: ArraySlice<String>) { self.init(encoding: strings, WireValue.string) }

    /// Floating-point numbers, encoded straight from them.
    public init(doubles: [Double]) { self.init(encoding: doubles, WireValue.double) }
    public init(doubles: ArraySlice<Double>) { self.init(encoding: doubles, WireValue.double) }

    /// Scalars, each written as the value `wire` gives (one that holds no reference).
    private init<S: Sequence>(encoding elements: S, _ wire: (S.Element) -> WireValue) {
        var buffer = ByteBuffer()
        var ends: [Int] = []
        ends.reserveCapacity(elements.underestimatedCount)
        buffer.writeEncoded(reserving: elements.underestimatedCount * 5 + 256) { writer in
            for element in elements {
                writer.write(wire(element))
                ends.append(writer.offset)
            }
        }
        self.ends = ends
        bytes = Array(buffer.readableBytesView)
    }

    // Equal when they hold the same values; `holdsReferences` is a hint, not part of them.
    public static func == (lhs: EncodedValues, rhs: EncodedValues) -> Bool { lhs.bytes == rhs.bytes && lhs.ends == rhs.ends }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes)
        hasher.combine(ends)
    }

    public var count: Int { ends.count }
    public var isEmpty: Bool { ends.isEmpty }

    private func range(_ index: Int) -> Range<Int> { (index == 0 ? 0 : ends[index - 1])..<ends[index] }

    /// Where the values at `indices` lie in `bytes`, together.
    fileprivate func byteRange(_ indices: Range<Int>) -> Range<Int> {
        indices.isEmpty ? 0..<0 : (indices.lowerBound == 0 ? 0 : ends[indices.lowerBound - 1])..<ends[indices.upperBound - 1]
    }

    /// Value `index`, decoded.
    public subscript(index: Int) -> WireValue {
        let range = range(index)
        return bytes.withUnsafeBufferPointer { all in
            var reader = MessagePackReader(bytes: UnsafeBufferPointer(rebasing: all[range]), limits: .default)
            do {
                return try reader.readValue(depth: 0)
            } catch {
                preconditionFailure("EncodedValues holds only values that were checked or encoded here: \(error)")
            }
        }
    }

    /// Every value, decoded.
    public var values: [WireValue] { (0..<count).map { self[$0] } }

    /// Every value as an integer, read straight from the bytes; nil if one is not an integer
    /// that fits an `Int`. (A map of numbers decodes its results this way, with no
    /// `WireValue` per result.)
    public func integers() -> [Int]? {
        scalars { lead, bytes, offset -> Int? in
            func big<T: FixedWidthInteger>(_: T.Type) -> T? {
                guard offset + MemoryLayout<T>.size <= bytes.count else { return nil }
                var number: T = 0
                for _ in 0..<MemoryLayout<T>.size {
                    number = number << 8 | T(truncatingIfNeeded: bytes[offset])
                    offset += 1
                }
                return number
            }
            switch lead {
            case 0x00...0x7f: return Int(lead)
            case 0xe0...0xff: return Int(Int8(bitPattern: lead))
            case 0xcc: return big(UInt8.self).map(Int.init)
            case 0xcd: return big(UInt16.self).map(Int.init)
            case 0xce: return big(UInt32.self).map(Int.init)
            case 0xcf: return big(UInt64.self).flatMap(Int.init(exactly:))
            case 0xd0: return big(Int8.self).map(Int.init)
            case 0xd1: return big(Int16.self).map(Int.init)
            case 0xd2: return big(Int32.self).map(Int.init)
            case 0xd3: return big(Int64.self).map(Int.init)
            default: return nil
            }
        }
    }

    /// Every value as a string (see `integers`); nil if one is not a string.
    public func strings() -> [String]? {
        scalars { lead, bytes, offset -> String? in
            var length = 0
            switch lead {
            case 0xa0...0xbf: length = Int(lead & 0x1f)
            case 0xd9, 0xda, 0xdb:
                let width = lead == 0xd9 ? 1 : lead == 0xda ? 2 : 4
                guard offset + width <= bytes.count else { return nil }
                for _ in 0..<width {
                    length = length << 8 | Int(bytes[offset])
                    offset += 1
                }
            default: return nil
            }
            guard offset + length <= bytes.count else { return nil }
            // Scanning checked the UTF-8 already.
            defer { offset += length }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[offset..<offset + length]), as: UTF8.self)
        }
    }

    /// Every value as a floating-point number (see `integers`); nil if one is not one.
    public func doubles() -> [Double]? {
        scalars { lead, bytes, offset -> Double? in
            let width = lead == 0xcb ? 8 : lead == 0xca ? 4 : 0
            guard width > 0, offset + width <= bytes.count else { return nil }
            var pattern: UInt64 = 0
            for _ in 0..<width {
                pattern = pattern << 8 | UInt64(bytes[offset])
                offset += 1
            }
            return width == 8 ? Double(bitPattern: pattern) : Double(Float(bitPattern: UInt32(pattern)))
        }
    }

    /// Reads the values in order with `read`, which gets a value's lead byte, the bytes, and
    /// the offset after the lead byte, to move past the value; nil once `read` refuses one.
    private func scalars<T>(_ read: (UInt8, UnsafeBufferPointer<UInt8>, inout Int) -> T?) -> [T]? {
        bytes.withUnsafeBufferPointer { bytes -> [T]? in
            var result: [T] = []
            result.reserveCapacity(ends.count)
            var offset = 0
            for end in ends {
                guard offset < end else { return nil }
                let lead = bytes[offset]
                offset += 1
                guard let value = read(lead, bytes, &offset), offset == end else { return nil }
                result.append(value)
            }
            return result
        }
    }

    /// Whether value `index` is an array (a `starmap` call's argument list).
    public func isArray(_ index: Int) -> Bool {
        let lead = bytes[range(index).lowerBound]
        return (0x90...0x9f).contains(lead) || lead == 0xdc || lead == 0xdd
    }

    public mutating func append(_ value: WireValue) {
        var buffer = ByteBuffer()
        buffer.writeWireValue(value)
        bytes += buffer.readableBytesView
        ends.append(bytes.count)
        if value.holdsReference { holdsReferences = true }
    }

    /// Appends value `index` of `other`.
    public mutating func append(_ other: EncodedValues, at index: Int) {
        bytes += other.bytes[other.range(index)]
        ends.append(bytes.count)
        if other.holdsReferences { holdsReferences = true }
    }

    /// Appends the values of `other` at `indices` (one copy of their bytes).
    public mutating func append(_ other: EncodedValues, in indices: Range<Int>) {
        guard !indices.isEmpty else { return }
        let first = indices.lowerBound == 0 ? 0 : other.ends[indices.lowerBound - 1]
        let shift = bytes.count - first
        bytes += other.bytes[first..<other.ends[indices.upperBound - 1]]
        // Not `reserveCapacity(count + new)`: an exact reservation at each append gives up the
        // array's doubling, and a job fed in pieces copied all its calls' ends at every piece.
        // Copied as they are, then shifted in place: a lazy `map` into `append` went element
        // by element through an iterator (a third of a manager's time in a long map).
        let start = ends.count
        ends.append(contentsOf: other.ends[indices])
        if shift != 0 {
            ends.withUnsafeMutableBufferPointer { all in
                for index in start..<all.count { all[index] &+= shift }
            }
        }
        if other.holdsReferences { holdsReferences = true }
    }

    public mutating func append(contentsOf other: EncodedValues) { append(other, in: 0..<other.count) }

    /// Consecutive values of an `EncodedValues`, not copied out of it: the scheduler hands a
    /// worker its calls this way, and the manager writes them into the frame straight from
    /// the job's storage.
    public struct Slice: Equatable, Sendable {
        public let base: EncodedValues
        public let indices: Range<Int>

        public init(_ base: EncodedValues, _ indices: Range<Int>) {
            precondition(indices.lowerBound >= 0 && indices.upperBound <= base.count, "a slice lies within its values")
            self.base = base
            self.indices = indices
        }

        /// All of `values`.
        public init(_ values: EncodedValues) { self.init(values, 0..<values.count) }

        public var count: Int { indices.count }

        /// The values, copied out.
        public var copied: EncodedValues { base[indices] }

        /// The values, decoded.
        public var values: [WireValue] { indices.map { base[$0] } }

        /// Equal when they hold the same values, wherever those sit.
        public static func == (lhs: Slice, rhs: Slice) -> Bool { lhs.copied == rhs.copied }

        fileprivate func withBytes<T>(_ body: (UnsafeRawBufferPointer) -> T) -> T {
            let range = base.byteRange(indices)
            return base.bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[range])) }
        }

        fileprivate var byteCount: Int { base.byteRange(indices).count }
    }

    /// The values at `indices`.
    public subscript(indices: Range<Int>) -> EncodedValues {
        if indices == 0..<count { return self }  // shared, not copied
        var slice = EncodedValues()
        slice.append(self, in: indices)
        return slice
    }

    /// Drops the first `count` values.
    public mutating func removeFirst(_ count: Int) {
        guard count > 0 else { return }
        let cut = ends[count - 1]
        bytes.removeFirst(cut)
        ends.removeFirst(count)
        for index in ends.indices { ends[index] -= cut }
    }

    /// Reads a MessagePack array of values, checking each as decoding would (depth counted
    /// from `depth`, the array's own level) but building none of them.
    static func scanArray(_ reader: inout MessagePackReader, depth: Int) throws -> EncodedValues {
        let count = try reader.arrayHeader(depth: depth)
        var scanned = EncodedValues()
        scanned.ends.reserveCapacity(count)
        let start = reader.offset
        let end = reader.bytes.count
        let fixedSizes = fixedSizes
        for _ in 0..<count {
            // Numbers, nil and booleans need no checking beyond their length.
            if reader.offset < end, case let size = fixedSizes[Int(reader.bytes[reader.offset])], size > 0, reader.offset + Int(size) <= end {
                reader.offset += Int(size)
            } else if try reader.skipValue(depth: depth + 1) {
                scanned.holdsReferences = true
            }
            scanned.ends.append(reader.offset - start)
        }
        scanned.bytes = Array(UnsafeBufferPointer(rebasing: reader.bytes[start..<reader.offset]))
        return scanned
    }
}

extension WireValue {
    /// Whether an object reference is in this value.
    fileprivate var holdsReference: Bool {
        switch self {
        case .objectRef: true
        case .array(let elements): elements.contains { $0.holdsReference }
        case .map(let pairs): pairs.contains { $0.key.holdsReference || $0.value.holdsReference }
        default: false
        }
    }
}

/// The encoded size of each value whose lead byte fixes it (numbers, nil, booleans); 0 for
/// the others.
private let fixedSizes: [UInt8] = (0...255).map { lead -> UInt8 in
    switch lead {
    case 0x00...0x7f, 0xe0...0xff, 0xc0, 0xc2, 0xc3: 1
    case 0xcc, 0xd0: 2
    case 0xcd, 0xd1: 3
    case 0xca, 0xce, 0xd2: 5
    case 0xcb, 0xcf, 0xd3: 9
    default: 0
    }
}

extension ByteBuffer {
    /// Appends the map `fields` (a `WireValue.map`) with one more entry: `key` and the array
    /// `values`.
    @discardableResult
    public mutating func writeMap(_ fields: WireValue, array key: String, _ values: EncodedValues) -> Int {
        writeMap(fields, array: key, EncodedValues.Slice(values))
    }

    /// Appends the map `fields` with one more entry: `key` and the array of the values in
    /// `slice`, written from their bytes where they lie.
    @discardableResult
    public mutating func writeMap(_ fields: WireValue, array key: String, _ slice: EncodedValues.Slice) -> Int {
        let pairs = fields.mapValue ?? []
        return writeEncoded(reserving: slice.byteCount + 256) { writer in
            writer.mapHeader(pairs.count + 1)
            for pair in pairs {
                writer.write(pair.key)
                writer.write(pair.value)
            }
            writer.write(.string(key))
            writer.write(array: slice)
        }
    }
}

extension ByteBuffer {
    /// The body of the request `["call", object, method, arguments]` whose argument `index`
    /// is the array `values`, written from their bytes: byte for byte the `Request.call` with
    /// that array in place.
    public static func callRequest(object: UInt64, method: String, arguments: [WireValue], array values: EncodedValues, at index: Int) -> ByteBuffer {
        precondition(arguments.indices.contains(index), "the array takes the place of one of the arguments")
        var body = ByteBuffer()
        body.writeEncoded(reserving: values.bytes.count + 256) { writer in
            writer.arrayHeader(4)
            writer.write(.string("call"))
            writer.write(.integer(object))
            writer.write(.string(method))
            writer.arrayHeader(arguments.count)
            for (place, argument) in arguments.enumerated() {
                if place == index { writer.write(array: values) } else { writer.write(argument) }
            }
        }
        return body
    }
}

extension ByteBuffer {
    /// Appends a pool's `next` answer, `[finished, [value], completed, total, failures]`,
    /// with its values written from their bytes.
    @discardableResult
    public mutating func writePoolBatch(finished: Bool, values: EncodedValues, completed: Int, total: Int?, failures: [WireValue]) -> Int {
        writeEncoded(reserving: values.bytes.count + 256) { writer in
            writer.arrayHeader(5)
            writer.write(.bool(finished))
            writer.write(array: values)
            writer.write(.integer(completed))
            writer.write(total.map { .integer($0) } ?? .null)
            writer.write(array: failures)
        }
    }
}

extension MessagePackWriter {
    mutating func write(array values: EncodedValues) { write(array: EncodedValues.Slice(values)) }

    mutating func write(array slice: EncodedValues.Slice) {
        arrayHeader(slice.count)
        slice.withBytes { raw($0) }
    }
}

extension ByteBuffer {
    /// Whether these bytes, one MessagePack value, hold an object reference: a walk of the
    /// value that builds nothing. True also when they are not a valid value (decoding it then
    /// says why).
    public var holdsObjectReference: Bool {
        withUnsafeReadableBytes { raw in
            var reader = MessagePackReader(bytes: raw.bindMemory(to: UInt8.self), limits: .default)
            return (try? reader.skipValue(depth: 0)) ?? true
        }
    }
}

/// A MessagePack map read field by field, with the arrays under some keys kept encoded: the
/// pool messages whose calls or results the manager passes on without decoding them.
public struct ScannedMap: Sendable {
    public private(set) var fields: [String: WireValue] = [:]
    public private(set) var arrays: [String: EncodedValues] = [:]

    /// Reads `body`, which must be exactly one map with string keys; the arrays under
    /// `scanning` are scanned, everything else decoded.
    public init(_ body: ByteBuffer, scanning: Set<String>, limits: WireLimits = .default) throws {
        var fields: [String: WireValue] = [:]
        var arrays: [String: EncodedValues] = [:]
        try body.withUnsafeReadableBytes { raw in
            var reader = MessagePackReader(bytes: raw.bindMemory(to: UInt8.self), limits: limits)
            let count = try reader.mapHeader()
            for _ in 0..<count {
                guard case .string(let key) = try reader.readValue(depth: 1) else {
                    throw WireFormatError(.malformedMessage, "a pool message's keys are strings")
                }
                if scanning.contains(key) {
                    arrays[key] = try EncodedValues.scanArray(&reader, depth: 1)
                } else {
                    fields[key] = try reader.readValue(depth: 1)
                }
            }
            guard reader.offset == raw.count else {
                throw WireFormatError(.trailingBytes, "\(raw.count - reader.offset) bytes follow the message's map")
            }
        }
        self.fields = fields
        self.arrays = arrays
    }
}

/// A pool's `map` or `feed` request (`["call", id, "map" | "feed", [arg, [call...], ...]]`)
/// read with its calls left encoded, so that the manager never builds a value per call.
public struct PoolCallsRequest: Sendable {
    public let object: UInt64
    public let method: String
    /// The arguments, with nil in place of the calls.
    public let arguments: [WireValue]
    public let calls: EncodedValues

    /// Nil for any other body, and for one this reading refuses (a call nested deeper than
    /// `limits` allow, holding an object reference, or malformed): the general path reads
    /// those and gives their precise error or checks their references.
    public init?(body: ByteBuffer, limits: WireLimits) {
        let read: (UInt64, String, [WireValue], EncodedValues)? = body.withUnsafeReadableBytes { raw in
            guard var reader = MessagePackReader.afterCallPrefix(raw, limits: limits) else { return nil }
            guard let object = (try? reader.readValue(depth: 1))?.uint64Value, case .string(let method)? = try? reader.readValue(depth: 1),
                method == "map" || method == "feed", let count = try? reader.arrayHeader(depth: 1), count >= 2,
                let first = try? reader.readValue(depth: 2)
            else { return nil }
            guard let calls = try? EncodedValues.scanArray(&reader, depth: 2), !calls.holdsReferences else { return nil }
            var arguments = [first, .null]
            for _ in 2..<count {
                guard let argument = try? reader.readValue(depth: 2) else { return nil }
                arguments.append(argument)
            }
            guard reader.offset == raw.count else { return nil }
            return (object, method, arguments, calls)
        }
        guard let (object, method, arguments, calls) = read else { return nil }
        self.object = object
        self.method = method
        self.arguments = arguments
        self.calls = calls
    }
}
