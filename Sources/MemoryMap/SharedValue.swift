import Atomics
import Glibc
import Threading

/// A plain value in shared memory (Python `multiprocessing.Value(typecode, value, lock)`).
/// With `lock: true` (the default, as Python's) reads and writes of `value` take the value's
/// own process-shared RLock; pass an existing `ProcessLock` or `ProcessRLock` to share one
/// lock among several values, or `lock: false` for none. `getLock()` returns it for
/// compound updates:
///
///     let counter = try SharedValue<Int>(0)
///     try counter.getLock()!.withLock { counter.unlockedValue += 1 }
///
/// Integer values also have lock-free atomic operations (`add`, `compareExchange`). Pass a
/// `SharedValue` to a child process as an argument: it encodes as its shared memory name.
public final class SharedValue<Value: BitwiseCopyable & Sendable>: SharedByName, @unchecked Sendable {
    let memory: SharedMemory
    let guardLock: GuardLock
    static var valueOffset: Int { SharedHeader.size + GuardLock.regionSize }
    var pointer: UnsafeMutablePointer<Value> {
        (memory.baseAddress + SharedValue.valueOffset).assumingMemoryBound(to: Value.self)
    }

    private init(_ initial: Value, _ choice: GuardLock.Choice) throws(MemoryMapError) {
        memory = try SharedMemory(creating: SharedValue.valueOffset + max(MemoryLayout<Value>.stride, 8))
        guardLock = try GuardLock(creatingIn: memory, at: SharedHeader.size, choice)
        SharedHeader.write(memory, kind: SharedKind.value, detail: UInt64(MemoryLayout<Value>.size) << 2 | guardLock.mode)
        (memory.baseAddress + SharedValue.valueOffset).initializeMemory(as: Value.self, repeating: initial, count: 1)
    }

    /// A new shared value with its own RLock; `lock: false` makes `value` unsynchronized
    /// (Python `lock=False`).
    public convenience init(_ initial: Value, lock: Bool = true) throws(MemoryMapError) {
        try self.init(initial, lock ? .own : .none)
    }

    /// A new shared value guarded by an existing RLock (Python `Value(t, v, lock=rlock)`).
    public convenience init(_ initial: Value, lock: ProcessRLock) throws(MemoryMapError) {
        try self.init(initial, .existing(lock.state))
    }

    /// A new shared value guarded by an existing Lock.
    public convenience init(_ initial: Value, lock: ProcessLock) throws(MemoryMapError) {
        try self.init(initial, .existing(lock.state))
    }

    /// Opens the value named `name`; it must hold a `Value` of the same size.
    public init(opening name: String) throws(MemoryMapError) {
        memory = try SharedMemory(opening: name)
        let detail = try SharedHeader.check(memory, kind: SharedKind.value, what: "SharedValue")
        guard detail >> 2 == UInt64(MemoryLayout<Value>.size) else {
            throw MemoryMapError(.wrongType, "'\(name)' holds a value of \(detail >> 2) bytes, not a \(Value.self)")
        }
        guardLock = try GuardLock(openingIn: memory, at: SharedHeader.size, mode: detail & 3)
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

    /// Python `v.get_lock()`: the lock guarding the value, a `ProcessRLock` or the
    /// `ProcessLock` it was given (nil when made with `lock: false`).
    public func getLock() -> ProcessSharedLock? { guardLock.handle }

    private func withOptionalLock<Result>(_ body: () -> Result) -> Result {
        guard let state = guardLock.state else { return body() }
        _ = try? state.acquire(blocking: true, timeout: nil)
        defer { try? state.release() }
        return body()
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

    /// Beyond Python: sets the value atomically without the lock, for a single writer that
    /// others watch (a release store: no read-modify-write, so cheap enough per call).
    public func store(_ newValue: Value) { atomic.store(newValue, ordering: .releasing) }

    /// Beyond Python: sets `desired` if the value is `expected`, atomically; returns whether it did.
    @discardableResult
    public func compareExchange(expected: Value, desired: Value) -> Bool {
        atomic.compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent).exchanged
    }
}

extension SharedValue where Value == Int {
    /// `store` for `Int`, compiled for it here: the generic one, called from another module,
    /// looks up its conformances at every call (a worker process stores its progress word
    /// after every task call).
    public func store(_ newValue: Int) { atomic.store(newValue, ordering: .releasing) }
}

/// A fixed-length array of plain values in shared memory (Python
/// `multiprocessing.Array(typecode, size_or_initializer, lock)`); `lock` as for `SharedValue`.
public final class SharedArray<Element: BitwiseCopyable & Sendable>: SharedByName, @unchecked Sendable {
    let memory: SharedMemory
    let guardLock: GuardLock
    /// Python `len(a)`.
    public let count: Int
    static var elementsOffset: Int { SharedHeader.size + GuardLock.regionSize }
    var elements: UnsafeMutablePointer<Element> {
        (memory.baseAddress + SharedArray.elementsOffset).assumingMemoryBound(to: Element.self)
    }

    private init(_ initial: [Element], _ choice: GuardLock.Choice) throws(MemoryMapError) {
        guard initial.count < 1 << 30 else { throw MemoryMapError(.invalidArgument, "a shared array holds fewer than 2^30 elements") }
        count = initial.count
        memory = try SharedMemory(creating: SharedArray.elementsOffset + max(1, count) * MemoryLayout<Element>.stride)
        guardLock = try GuardLock(creatingIn: memory, at: SharedHeader.size, choice)
        SharedHeader.write(
            memory, kind: SharedKind.array, detail: UInt64(MemoryLayout<Element>.stride) << 34 | UInt64(count) << 2 | guardLock.mode)
        initial.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { elements.initialize(from: base, count: count) }
        }
    }

    /// A shared array holding `initial`, with its own RLock unless `lock` is false.
    public convenience init(_ initial: [Element], lock: Bool = true) throws(MemoryMapError) {
        try self.init(initial, lock ? .own : .none)
    }

    /// A shared array guarded by an existing RLock.
    public convenience init(_ initial: [Element], lock: ProcessRLock) throws(MemoryMapError) {
        try self.init(initial, .existing(lock.state))
    }

    /// A shared array guarded by an existing Lock.
    public convenience init(_ initial: [Element], lock: ProcessLock) throws(MemoryMapError) {
        try self.init(initial, .existing(lock.state))
    }

    /// A shared array of `count` copies of `repeating` (Python `Array('i', 10)` gives zeros).
    public convenience init(repeating element: Element, count: Int, lock: Bool = true) throws(MemoryMapError) {
        guard count >= 0 else { throw MemoryMapError(.invalidArgument, "an array's size must be non-negative") }
        try self.init(Array(repeating: element, count: count), lock ? .own : .none)
    }

    /// Opens the array named `name`.
    public init(opening name: String) throws(MemoryMapError) {
        memory = try SharedMemory(opening: name)
        let detail = try SharedHeader.check(memory, kind: SharedKind.array, what: "SharedArray")
        guard detail >> 34 == UInt64(MemoryLayout<Element>.stride) else {
            throw MemoryMapError(.wrongType, "'\(name)' holds elements of \(detail >> 34) bytes, not \(Element.self)")
        }
        count = Int((detail >> 2) & 0xFFFF_FFFF)
        guardLock = try GuardLock(openingIn: memory, at: SharedHeader.size, mode: detail & 3)
    }

    public var name: String { memory.name }

    private func position(_ index: Int) throws(MemoryMapError) -> Int {
        let adjusted = index < 0 ? index + count : index
        guard adjusted >= 0, adjusted < count else { throw MemoryMapError(.outOfRange, "array index out of range") }
        return adjusted
    }

    private func withOptionalLock<Result>(_ body: () throws(MemoryMapError) -> Result) throws(MemoryMapError) -> Result {
        guard let state = guardLock.state else { return try body() }
        _ = try state.acquire(blocking: true, timeout: nil)
        defer { try? state.release() }
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
    public func getLock() -> ProcessSharedLock? { guardLock.handle }

    /// Direct access to the elements (take `getLock()` around it if others write).
    public func withUnsafeMutableBufferPointer<Result>(_ body: (UnsafeMutableBufferPointer<Element>) throws -> Result) rethrows -> Result {
        try body(UnsafeMutableBufferPointer(start: elements, count: count))
    }

}

extension SharedArray where Element: AtomicInteger {
    /// Beyond Python: adds `delta` to element `index` atomically; returns the new value.
    @discardableResult
    public func add(_ delta: Element, at index: Int) throws(MemoryMapError) -> Element {
        let at = try position(index)
        return atomicView(elements + at).wrappingIncrementThenLoad(by: delta, ordering: .sequentiallyConsistent)
    }

    /// Beyond Python: sets element `index` to `desired` if it is `expected`, atomically.
    @discardableResult
    public func compareExchange(at index: Int, expected: Element, desired: Element) throws(MemoryMapError) -> Bool {
        let at = try position(index)
        return atomicView(elements + at).compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent).exchanged
    }
}

/// The lock of a SharedValue or SharedArray (Python's `lock=` argument): none, its own RLock
/// inside its memory, or an existing lock elsewhere, whose location it records so that
/// every process opening the value finds the same lock.
struct GuardLock {
    enum Choice {
        case none, own
        case existing(SharedLockState)
    }

    /// The own lock's room, then the existing lock's location (name length, name, offset).
    static let regionSize = SharedLockState.size + 256
    static let maxNameLength = 200
    /// 0: none, 1: own, 2: existing (kept in the owner's header).
    let mode: UInt64
    let state: SharedLockState?
    let handle: ProcessSharedLock?

    init(creatingIn memory: SharedMemory, at offset: Int, _ choice: Choice) throws(MemoryMapError) {
        switch choice {
        case .none:
            (mode, state, handle) = (0, nil, nil)
        case .own:
            let own = try SharedLockState(embeddedIn: memory, at: offset, creating: true)
            (mode, state, handle) = (1, own, try ProcessRLock(state: own))
        case .existing(let lock):
            let name = Array(lock.memory.name.utf8)
            guard name.count <= GuardLock.maxNameLength else { throw MemoryMapError(.invalidArgument, "the lock's name is too long to record") }
            let location = memory.baseAddress + offset + SharedLockState.size
            location.storeBytes(of: UInt8(name.count), as: UInt8.self)
            (location + 1).copyMemory(from: name, byteCount: name.count)
            location.storeBytes(of: lock.offset, toByteOffset: 8 + GuardLock.maxNameLength, as: Int.self)
            (mode, state, handle) = (2, lock, try GuardLock.handle(for: lock))
        }
    }

    init(openingIn memory: SharedMemory, at offset: Int, mode: UInt64) throws(MemoryMapError) {
        self.mode = mode
        switch mode {
        case 1:
            let own = try SharedLockState(embeddedIn: memory, at: offset, creating: false)
            (state, handle) = (own, try ProcessRLock(state: own))
        case 2:
            let location = memory.baseAddress + offset + SharedLockState.size
            let length = min(Int(location.load(as: UInt8.self)), GuardLock.maxNameLength)
            let name = String(decoding: UnsafeRawBufferPointer(start: location + 1, count: length), as: UTF8.self)
            let lockOffset = location.load(fromByteOffset: 8 + GuardLock.maxNameLength, as: Int.self)
            let lock = try SharedLockState(opening: try SharedMemory(opening: name), at: lockOffset)
            (state, handle) = (lock, try GuardLock.handle(for: lock))
        default:
            (state, handle) = (nil, nil)
        }
    }

    private static func handle(for lock: SharedLockState) throws(MemoryMapError) -> ProcessSharedLock {
        lock.recursive ? try ProcessRLock(state: lock) : try ProcessLock(state: lock)
    }
}
