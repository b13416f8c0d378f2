import ColonyWire

/// Python's rules for comparing and indexing, applied to wire values, so shared objects
/// behave as a SyncManager user expects (SPEC.md 6.3, "natural order").
enum PythonSemantics {
    /// Python `==`: numbers compare by value across int and float; containers element-wise.
    static func equal(_ a: WireValue, _ b: WireValue) -> Bool {
        switch (a, b) {
        case (.int, .double), (.double, .int), (.uint, .double), (.double, .uint):
            return a.doubleValue == b.doubleValue
        case (.array(let x), .array(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        default:
            return a == b
        }
    }

    /// The key under which a dict stores `key`: integral floats become integers, as
    /// `d[1.0]` and `d[1]` are the same entry in Python.
    static func dictKey(_ key: WireValue) -> WireValue {
        if case .double(let number) = key, number.rounded() == number, let integer = Int64(exactly: number) {
            return .int(integer)
        }
        return key
    }

    /// Python `<` for the natural order; throws WrongType for kinds that do not compare.
    static func less(_ a: WireValue, _ b: WireValue) throws(RemoteError) -> Bool {
        switch (a, b) {
        case (.int(let x), .int(let y)): return x < y
        case (.uint(let x), .uint(let y)): return x < y
        case (.int(let x), .uint(let y)): return x < 0 || UInt64(x) < y
        case (.uint(let x), .int(let y)): return y >= 0 && x < UInt64(y)
        case (.double, .int), (.double, .uint), (.int, .double), (.uint, .double), (.double, .double):
            return a.doubleValue! < b.doubleValue!
        case (.string(let x), .string(let y)): return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars)
        case (.bytes(let x), .bytes(let y)): return x.lexicographicallyPrecedes(y)
        case (.bool(let x), .bool(let y)): return !x && y
        case (.array(let x), .array(let y)):
            for (left, right) in zip(x, y) where !equal(left, right) { return try less(left, right) }
            return x.count < y.count
        default:
            throw RemoteError(.wrongType, "'<' is not supported between \(a.kindDescription) and \(b.kindDescription)")
        }
    }

    /// Python's index normalization: negative counts from the end; nil when out of range.
    static func index(_ index: Int, count: Int) -> Int? {
        let adjusted = index < 0 ? index + count : index
        return adjusted >= 0 && adjusted < count ? adjusted : nil
    }

    /// The positions a slice `[start:stop:step]` selects in a sequence of `count` elements,
    /// as Python's `slice.indices` computes them.
    static func slice(start: Int?, stop: Int?, step: Int?, count: Int) throws(RemoteError) -> [Int] {
        let step = step ?? 1
        guard step != 0 else { throw RemoteError(.valueError, "slice step cannot be zero") }
        func clamp(_ value: Int?, _ defaultValue: Int, lower: Int, upper: Int) -> Int {
            guard var value else { return defaultValue }
            if value < 0 { value += count }
            return min(max(value, lower), upper)
        }
        if step > 0 {
            let from = clamp(start, 0, lower: 0, upper: count)
            let to = clamp(stop, count, lower: 0, upper: count)
            return from < to ? Array(stride(from: from, to: to, by: step)) : []
        }
        let from = clamp(start, count - 1, lower: -1, upper: count - 1)
        let to = clamp(stop, -1, lower: -1, upper: count - 1)
        return from > to ? Array(stride(from: from, to: to, by: step)) : []
    }

    /// An optional integer argument (nil allowed).
    static func optionalInt(_ value: WireValue?, _ what: String) throws(RemoteError) -> Int? {
        guard let value, value != .null else { return nil }
        guard let number = value.int64Value.flatMap({ Int(exactly: $0) }) else {
            throw RemoteError(.wrongType, "\(what) must be an integer or nil, not \(value.kindDescription)")
        }
        return number
    }

    /// Adds two numbers as Python does (int + int stays int; anything with a float is float).
    static func add(_ a: WireValue, _ b: WireValue) throws(RemoteError) -> WireValue {
        switch (a, b) {
        case (.int(let x), .int(let y)):
            let (sum, overflow) = x.addingReportingOverflow(y)
            if !overflow { return .int(sum) }
            throw RemoteError(.valueError, "integer overflow: \(x) + \(y) does not fit in 64 bits")
        case (.int, .double), (.double, .int), (.double, .double), (.uint, .double), (.double, .uint):
            return .double(a.doubleValue! + b.doubleValue!)
        case (.uint, .int), (.int, .uint), (.uint, .uint):
            if let x = a.int64Value, let y = b.int64Value { return try add(.int(x), .int(y)) }
            guard let x = a.uint64Value, let y = b.uint64Value else {
                throw RemoteError(.valueError, "integer overflow adding \(a) and \(b)")
            }
            let (sum, overflow) = x.addingReportingOverflow(y)
            if overflow { throw RemoteError(.valueError, "integer overflow: \(x) + \(y) does not fit in 64 bits") }
            return .integer(sum)
        default:
            throw RemoteError(.wrongType, "can only add numbers, not \(a.kindDescription) and \(b.kindDescription)")
        }
    }
}
