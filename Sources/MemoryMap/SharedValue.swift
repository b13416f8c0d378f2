import Atomics
import Glibc

/// A plain value in shared memory (Python `multiprocessing.Value(typecode, value, lock)`).
/// With `lock: true` (the default, as Python's) reads and writes of `value` take the value's
/// own process-shared RLock, which `getLock()` returns for compound updates:
///
///     let counter = try SharedValue<Int>(0)
///     try counter.getLock()!.withLock { counter.unlockedValue += 1 }
///
/// Integer values also have lock-free atomic operations (`add`, `compareExchange`). Pass a
/// `SharedValue` to a child process as an argument: it encodes as its shared memory name.
public final class SharedValue<Value: BitwiseCopyable & Sendable>: Codable, @unchecked Sendable {
    let memory: SharedMemory
    let lock: ProcessRLock?
    static var layout: (lockOffset: Int, valueOffset: Int, size: Int) {
        let valueOffset = SharedHeader.size + SharedLockState.size
        return (SharedHeader.size, valueOffset, valueOffset + max(MemoryLayout<Value>.stride, 8))
    }
    var pointer: UnsafeMutablePointer<Value> {
        (memory.baseAddress + SharedValue.layout.valueOffset).assumingMemoryBound(to: Value.self)
    }

    /// A new shared value; `lock: false` makes `value` unsynchronized (Python `lock=False`).
    public init(_ initial: Value, lock: Bool = true) throws(MemoryMapError) {
        memory = try SharedMemory(creating: SharedValue.layout.size)
        SharedHeader.write(memory, kind: SharedKind.value, detail: UInt64(MemoryLayout<Value>.size) << 1 | (lock ? 1 : 0))
        self.lock = lock ? try ProcessRLock(in: memory, at: SharedValue.layout.lockOffset) : nil
        (memory.baseAddress + SharedValue.layout.valueOffset).initializeMemory(as: Value.self, repeating: initial, count: 1)
    }

    /// Opens the value named `name`; it must hold a `Value` of the same size.
    public init(opening name: String) throws(MemoryMapError) {
        memory = try SharedMemory(opening: name)
        let detail = try SharedHeader.check(memory, kind: SharedKind.value, what: "SharedValue")
        guard detail >> 1 == UInt64(MemoryLayout<Value>.size) else {
            throw MemoryMapError(.wrongType, "'\(name)' holds a value of \(detail >> 1) bytes, not a \(Value.self)")
        }
        lock = detail & 1 == 1 ? try ProcessRLock(openingIn: memory, at: SharedValue.layout.lockOffset) : nil
    }

    /// The shared memory name other processes open it by.
    public var name: String { memory.name }

    /// Python `v.value`: read and written under the value's lock when it has one.
    public var value: Value {
        get { withOptionalLock { pointer.pointee } }
        set { withOptionalLock { pointer.pointee = newValue } }
    }

    /// The value without taking the lock: for use inside `getLock()!.withLock { }`.
    public var unlockedValue: Value {
        get { pointer.pointee }
        set { pointer.pointee = newValue }
    }

    /// Python `v.get_lock()`: the RLock guarding the value (nil when made with `lock: false`).
    public func getLock() -> ProcessRLock? { lock }

    private func withOptionalLock<Result>(_ body: () -> Result) -> Result {
        guard let lock else { return body() }
        _ = try? lock.state.acquire(blocking: true, timeout: nil)
        defer { try? lock.state.release() }
        return body()
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }

    public convenience init(from decoder: any Decoder) throws {
        try self.init(opening: try decoder.singleValueContainer().decode(String.self))
    }
}

/// An atomic view of a plain integer in shared memory (an integer's atomic representation
/// has the integer's layout).
func atomicView<Integer: AtomicInteger>(_ pointer: UnsafeMutablePointer<Integer>) -> UnsafeAtomic<Integer> {
    precondition(MemoryLayout<Integer.AtomicRepresentation>.size == MemoryLayout<Integer>.size, "an atomic integer must have its integer's layout")
    return UnsafeAtomic(at: UnsafeMutableRawPointer(pointer).assumingMemoryBound(to: Integer.AtomicRepresentation.self))
}

extension SharedValue where Value: AtomicInteger {
    var atomic: UnsafeAtomic<Value> { atomicView(pointer) }

    /// Beyond Python: adds `delta` atomically without the lock; returns the new value.
    @discardableResult
    public func add(_ delta: Value) -> Value { atomic.wrappingIncrementThenLoad(by: delta, ordering: .sequentiallyConsistent) }

    /// Beyond Python: sets `desired` if the value is `expected`, atomically; returns whether it did.
    @discardableResult
    public func compareExchange(expected: Value, desired: Value) -> Bool {
        atomic.compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent).exchanged
    }
}

/// A fixed-length array of plain values in shared memory (Python
/// `multiprocessing.Array(typecode, size_or_initializer, lock)`).
public final class SharedArray<Element: BitwiseCopyable & Sendable>: Codable, @unchecked Sendable {
    let memory: SharedMemory
    let lock: ProcessRLock?
    /// Python `len(a)`.
    public let count: Int
    static var elementsOffset: Int { SharedHeader.size + SharedLockState.size }
    var elements: UnsafeMutablePointer<Element> {
        (memory.baseAddress + SharedArray.elementsOffset).assumingMemoryBound(to: Element.self)
    }

    /// A shared array holding `initial`.
    public init(_ initial: [Element], lock: Bool = true) throws(MemoryMapError) {
        count = initial.count
        memory = try SharedMemory(creating: SharedArray.elementsOffset + max(1, count) * MemoryLayout<Element>.stride)
        SharedHeader.write(memory, kind: SharedKind.array, detail: UInt64(MemoryLayout<Element>.stride) << 33 | UInt64(count) << 1 | (lock ? 1 : 0))
        self.lock = lock ? try ProcessRLock(in: memory, at: SharedHeader.size) : nil
        initial.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { elements.initialize(from: base, count: count) }
        }
    }

    /// A shared array of `count` copies of `repeating` (Python `Array('i', 10)` gives zeros).
    public convenience init(repeating element: Element, count: Int, lock: Bool = true) throws(MemoryMapError) {
        guard count >= 0 else { throw MemoryMapError(.invalidArgument, "an array's size must be non-negative") }
        try self.init(Array(repeating: element, count: count), lock: lock)
    }

    /// Opens the array named `name`.
    public init(opening name: String) throws(MemoryMapError) {
        memory = try SharedMemory(opening: name)
        let detail = try SharedHeader.check(memory, kind: SharedKind.array, what: "SharedArray")
        guard detail >> 33 == UInt64(MemoryLayout<Element>.stride) else {
            throw MemoryMapError(.wrongType, "'\(name)' holds elements of \(detail >> 33) bytes, not \(Element.self)")
        }
        count = Int((detail >> 1) & 0xFFFF_FFFF)
        lock = detail & 1 == 1 ? try ProcessRLock(openingIn: memory, at: SharedHeader.size) : nil
    }

    public var name: String { memory.name }

    private func position(_ index: Int) throws(MemoryMapError) -> Int {
        let adjusted = index < 0 ? index + count : index
        guard adjusted >= 0, adjusted < count else { throw MemoryMapError(.outOfRange, "array index out of range") }
        return adjusted
    }

    private func withOptionalLock<Result>(_ body: () throws(MemoryMapError) -> Result) throws(MemoryMapError) -> Result {
        guard let lock else { return try body() }
        _ = try lock.state.acquire(blocking: true, timeout: nil)
        defer { try? lock.state.release() }
        return try body()
    }

    /// Python `a[i]`.
    public func get(_ index: Int) throws(MemoryMapError) -> Element {
        let at = try position(index)
        return try withOptionalLock { elements[at] }
    }

    /// Python `a[i] = x`.
    public func set(_ index: Int, _ element: Element) throws(MemoryMapError) {
        let at = try position(index)
        try withOptionalLock { elements[at] = element }
    }

    /// Python `a[:]`: a local copy.
    public func copy() -> [Element] {
        (try? withOptionalLock { Array(UnsafeBufferPointer(start: elements, count: count)) }) ?? []
    }

    /// Python `a[:] = values`: replaces every element (the counts must match).
    public func replaceAll(with values: [Element]) throws(MemoryMapError) {
        guard values.count == count else { throw MemoryMapError(.outOfRange, "Can only assign sequence of same size (\(count))") }
        try withOptionalLock {
            for (index, value) in values.enumerated() { elements[index] = value }
        }
    }

    /// Python `a.get_lock()`.
    public func getLock() -> ProcessRLock? { lock }

    /// Direct access to the elements (take `getLock()` around it if others write).
    public func withUnsafeMutableBufferPointer<Result>(_ body: (UnsafeMutableBufferPointer<Element>) throws -> Result) rethrows -> Result {
        try body(UnsafeMutableBufferPointer(start: elements, count: count))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }

    public convenience init(from decoder: any Decoder) throws {
        try self.init(opening: try decoder.singleValueContainer().decode(String.self))
    }
}

extension SharedArray where Element: AtomicInteger {
    /// Beyond Python: adds `delta` to element `index` atomically; returns the new value.
    @discardableResult
    public func add(_ delta: Element, at index: Int) throws(MemoryMapError) -> Element {
        let at = try position(index)
        return atomicView(elements + at).wrappingIncrementThenLoad(by: delta, ordering: .sequentiallyConsistent)
    }
}

extension ProcessRLock {
    /// An RLock inside another object's shared memory, at `offset`.
    convenience init(in memory: SharedMemory, at offset: Int) throws(MemoryMapError) {
        self.init(state: try SharedLockState(embeddedIn: memory, at: offset, creating: true))
    }

    convenience init(openingIn memory: SharedMemory, at offset: Int) throws(MemoryMapError) {
        self.init(state: try SharedLockState(embeddedIn: memory, at: offset, creating: false))
    }
}
