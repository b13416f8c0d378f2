import CMemoryMapShim
import Glibc
import Threading

/// What acquiring a process-shared lock found.
public struct ProcessLockAcquisition: Hashable, Sendable {
    /// Whether the caller now holds it (false: not blocking, or the timeout passed).
    public var acquired: Bool
    /// The previous holder's process died holding it: what it guarded may be half-updated.
    public var previousOwnerDied: Bool
}

/// Kinds written in the shared header.
enum SharedKind {
    static let lock: UInt32 = 1
    static let rlock: UInt32 = 2
    static let semaphore: UInt32 = 3
    static let event: UInt32 = 4
    static let condition: UInt32 = 5
    static let value: UInt32 = 6
    static let array: UInt32 = 7
    static let queue: UInt32 = 8
    static let barrier: UInt32 = 9
}

/// The state of a process-shared Lock or RLock: a robust mutex, its holder's thread id and
/// its recursion depth (both written only by the holder, while it holds the mutex).
final class SharedLockState: @unchecked Sendable {
    static let size = SharedHeader.size + SharedMutex.size + 64
    let memory: SharedMemory
    /// Where in `memory` the lock starts (locks of Values and Arrays live inside them).
    let offset: Int
    let mutex: SharedMutex
    let recursive: Bool
    private var holder: UnsafeMutablePointer<Int> {
        (memory.baseAddress + offset + SharedHeader.size + SharedMutex.size).assumingMemoryBound(to: Int.self)
    }
    private var depth: UnsafeMutablePointer<Int> { holder + 1 }
    private static var me: Int { Int(colony_gettid()) }

    /// Creates one in `memory` (at least `size` bytes) at offset 0.
    convenience init(creatingIn memory: SharedMemory, recursive: Bool) throws(MemoryMapError) {
        try self.init(memory: memory, offset: 0, recursive: recursive)
    }

    private init(memory: SharedMemory, offset: Int, recursive: Bool) throws(MemoryMapError) {
        self.memory = memory
        self.offset = offset
        self.recursive = recursive
        mutex = SharedMutex(pointer: memory.baseAddress + offset + SharedHeader.size)
        try mutex.initialize(recursive: recursive)
        SharedHeader.write(memory.baseAddress + offset, kind: recursive ? SharedKind.rlock : SharedKind.lock, detail: 0)
    }

    /// Opens the lock at `offset` of `memory`.
    init(opening memory: SharedMemory, at offset: Int = 0) throws(MemoryMapError) {
        guard offset >= 0, offset <= memory.size - SharedLockState.size else {
            throw MemoryMapError(.wrongType, "shared memory '\(memory.name)' has no lock at offset \(offset)")
        }
        self.memory = memory
        self.offset = offset
        let kind = (memory.baseAddress + offset).load(fromByteOffset: 4, as: UInt32.self)
        recursive = kind == SharedKind.rlock
        _ = try SharedHeader.check(memory.baseAddress + offset, size: memory.size - offset, name: memory.name,
            kind: recursive ? SharedKind.rlock : SharedKind.lock, what: "Lock or RLock")
        mutex = SharedMutex(pointer: memory.baseAddress + offset + SharedHeader.size)
    }

    /// A new or existing RLock inside another object's memory.
    convenience init(embeddedIn memory: SharedMemory, at offset: Int, creating: Bool) throws(MemoryMapError) {
        if creating {
            try self.init(memory: memory, offset: offset, recursive: true)
        } else {
            try self.init(opening: memory, at: offset)
        }
    }

    func acquire(blocking: Bool, timeout: Double?) throws(MemoryMapError) -> ProcessLockAcquisition {
        guard let died = try mutex.lock(blocking: blocking, deadline: blocking ? monotonicDeadline(timeout) : 0) else {
            return ProcessLockAcquisition(acquired: false, previousOwnerDied: false)
        }
        // A dead holder's recursion is void: the new holder starts at depth one.
        depth.pointee = died || holder.pointee != SharedLockState.me ? 1 : depth.pointee + 1
        holder.pointee = SharedLockState.me
        return ProcessLockAcquisition(acquired: true, previousOwnerDied: died)
    }

    func release() throws(MemoryMapError) {
        guard isOwnedByCaller else { throw MemoryMapError(.notOwner, "release of a lock this thread does not hold") }
        depth.pointee -= 1
        if depth.pointee == 0 { holder.pointee = 0 }
        try mutex.unlock()
    }

    var isOwnedByCaller: Bool { holder.pointee == SharedLockState.me && depth.pointee > 0 }

    /// Whether some thread holds the lock: its holder's thread id is written, and that
    /// thread is alive (a holder that died leaves the lock free for the next acquirer).
    var isHeld: Bool {
        let tid = holder.pointee
        return tid != 0 && access("/proc/\(tid)", F_OK) == 0
    }

    /// Who holds it, as Python's reprs name them: nil (nobody), the calling thread's name,
    /// "SomeOtherThread" (of this process) or "SomeOtherProcess".
    var ownerName: String? {
        guard isHeld else { return nil }
        let tid = holder.pointee
        if tid == SharedLockState.me { return Threading.Thread.current.name }
        return access("/proc/self/task/\(tid)", F_OK) == 0 ? "SomeOtherThread" : "SomeOtherProcess"
    }

    var heldDepth: Int { isHeld ? depth.pointee : 0 }

    /// Gives up every level (a local Condition over this lock); returns the depth to restore.
    func releaseAll() throws(MemoryMapError) -> Int {
        guard isOwnedByCaller else { throw MemoryMapError(.notOwner, "cannot wait on un-acquired lock") }
        let saved = depth.pointee
        for _ in 0..<saved { try release() }
        return saved
    }

    func restore(_ saved: Int) throws(MemoryMapError) {
        for _ in 0..<saved { _ = try acquire(blocking: true, timeout: nil) }
    }

    /// Waits on `condition`, giving up every level of the lock atomically with the wait (no
    /// notify can slip in between) and taking them back after. False on timeout.
    func wait(on condition: SharedCondition, deadline: UInt64) throws(MemoryMapError) -> Bool {
        guard isOwnedByCaller else { throw MemoryMapError(.notOwner, "cannot wait on un-acquired lock") }
        let saved = depth.pointee
        for _ in 1..<saved { try mutex.unlock() }  // keep one level for pthread_cond_wait
        depth.pointee = 0
        holder.pointee = 0
        let notified = condition.wait(mutex, deadline: deadline)
        for _ in 1..<saved { _ = try mutex.lock() }
        holder.pointee = SharedLockState.me
        depth.pointee = saved
        return notified
    }
}

/// What `ProcessLock` and `ProcessRLock` share: a robust mutex in shared memory, the
/// `Locking` protocol (so a local `Condition` or `withLock` works on them), and coding as
/// their location so they can be passed to child processes.
public class ProcessSharedLock: Locking, Codable, @unchecked Sendable, CustomStringConvertible {
    let state: SharedLockState

    init(state: SharedLockState) throws(MemoryMapError) {
        self.state = state
        let reentrant = self is ProcessRLock
        guard state.recursive == reentrant else {
            throw MemoryMapError(.wrongType, "'\(state.memory.name)' is \(state.recursive ? "an RLock" : "a Lock"), not \(reentrant ? "an RLock" : "a Lock")")
        }
    }

    /// The shared memory name other processes open it by.
    public var name: String { state.memory.name }

    /// Python `L.acquire(block, timeout)`, also telling whether the last holder died.
    public func acquireReportingDeath(blocking: Bool = true, timeout: Double? = nil) throws(MemoryMapError) -> ProcessLockAcquisition {
        try state.acquire(blocking: blocking, timeout: timeout)
    }

    /// Python `L.acquire(block, timeout)`.
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) throws -> Bool {
        try state.acquire(blocking: blocking, timeout: timeout).acquired
    }

    /// Python `L.release()`: `.notOwner` unless this thread holds it.
    public func release() throws { try state.release() }

    /// For a local `Condition`: gives up every level (one for a Lock).
    public func releaseForWait() throws -> Int { try state.releaseAll() }
    public func restoreAfterWait(_ saved: Int) throws { try state.restore(saved) }
    public func isOwnedByCurrentThread() throws -> Bool { state.isOwnedByCaller }

    /// Python `L.locked()`: whether any thread, in any process, holds it now.
    public var isLocked: Bool { state.isHeld }

    /// As Python's reprs: `<Lock(owner=None)>`, `<RLock(SomeOtherProcess, 1)>`.
    public var description: String {
        let owner = state.ownerName ?? "None"
        return state.recursive ? "<RLock(\(owner), \(state.heldDepth))>" : "<Lock(owner=\(owner))>"
    }

    public func encode(to encoder: any Encoder) throws { try state.encode(to: encoder) }

    public required init(from decoder: any Decoder) throws {
        let (name, offset) = try SharedLockState.decodeLocation(decoder)
        state = try SharedLockState(opening: try SharedMemory(opening: name), at: offset)
        guard state.recursive == (self is ProcessRLock) else { throw MemoryMapError(.wrongType, "'\(name)' is not a \(type(of: self))") }
    }
}

/// A lock shared between processes (Python `multiprocessing.Lock`), living in shared
/// memory. If its holder dies, the next acquirer gets it and `acquireReportingDeath` says so.
/// Unlike Python's (a semaphore), only the thread that holds it may release it.
public final class ProcessLock: ProcessSharedLock, @unchecked Sendable {
    /// A new lock in fresh shared memory.
    public init() throws(MemoryMapError) {
        try super.init(state: try SharedLockState(creatingIn: try SharedMemory(creating: SharedLockState.size), recursive: false))
    }

    override init(state: SharedLockState) throws(MemoryMapError) { try super.init(state: state) }

    /// Opens the lock named `name` (its `name` in the process that created it).
    public convenience init(opening name: String, offset: Int = 0) throws(MemoryMapError) {
        try self.init(state: try SharedLockState(opening: try SharedMemory(opening: name), at: offset))
    }

    public required init(from decoder: any Decoder) throws { try super.init(from: decoder) }
}

/// A reentrant lock shared between processes (Python `multiprocessing.RLock`).
public final class ProcessRLock: ProcessSharedLock, @unchecked Sendable {
    public init() throws(MemoryMapError) {
        try super.init(state: try SharedLockState(creatingIn: try SharedMemory(creating: SharedLockState.size), recursive: true))
    }

    override init(state: SharedLockState) throws(MemoryMapError) { try super.init(state: state) }

    /// Opens the RLock named `name` (at `offset` for the lock of a SharedValue or SharedArray).
    public convenience init(opening name: String, offset: Int = 0) throws(MemoryMapError) {
        try self.init(state: try SharedLockState(opening: try SharedMemory(opening: name), at: offset))
    }

    public required init(from decoder: any Decoder) throws { try super.init(from: decoder) }
}

extension SharedLockState {
    private enum CodingKeys: String, CodingKey { case name, offset }

    /// A lock travels as its shared memory name and offset.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(memory.name, forKey: .name)
        try container.encode(offset, forKey: .offset)
    }

    static func decodeLocation(_ decoder: any Decoder) throws -> (String, Int) {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        return (try container.decode(String.self, forKey: .name), try container.decode(Int.self, forKey: .offset))
    }
}

/// A counter and a condition variable in shared memory, for semaphores and events.
final class SharedCounter: @unchecked Sendable {
    static let size = SharedHeader.size + SharedMutex.size + SharedCondition.size + 64
    let memory: SharedMemory
    let mutex: SharedMutex
    let changed: SharedCondition
    var value: UnsafeMutablePointer<Int> { (memory.baseAddress + SharedHeader.size + SharedMutex.size + SharedCondition.size).assumingMemoryBound(to: Int.self) }
    var waiters: UnsafeMutablePointer<Int> { value + 1 }
    let limit: Int?  // a bounded semaphore's initial value

    init(creating kind: UInt32, value: Int, limit: Int?) throws(MemoryMapError) {
        memory = try SharedMemory(creating: SharedCounter.size)
        mutex = SharedMutex(pointer: memory.baseAddress + SharedHeader.size)
        changed = SharedCondition(pointer: memory.baseAddress + SharedHeader.size + SharedMutex.size)
        try mutex.initialize(recursive: false)
        try changed.initialize()
        self.limit = limit
        self.value.pointee = value
        SharedHeader.write(memory, kind: kind, detail: limit.map { UInt64($0) + 1 } ?? 0)
    }

    init(opening name: String, kind: UInt32, what: String) throws(MemoryMapError) {
        memory = try SharedMemory(opening: name)
        let detail = try SharedHeader.check(memory, kind: kind, what: what)
        limit = detail == 0 ? nil : Int(detail - 1)
        mutex = SharedMutex(pointer: memory.baseAddress + SharedHeader.size)
        changed = SharedCondition(pointer: memory.baseAddress + SharedHeader.size + SharedMutex.size)
    }

    /// Runs `body` with the mutex held.
    func withLock<Result>(_ body: () throws(MemoryMapError) -> Result) throws(MemoryMapError) -> Result {
        mutex.lockForState()
        defer { try? mutex.unlock() }
        return try body()
    }

    /// Waits (mutex held) until `ready` or the deadline; returns `ready`'s last answer.
    func wait(until ready: () -> Bool, timeout: Double?) -> Bool {
        let deadline = monotonicDeadline(timeout)
        while !ready() {
            waiters.pointee += 1
            let inTime = changed.wait(mutex, deadline: deadline)
            waiters.pointee -= 1
            if !inTime { return ready() }
        }
        return true
    }
}

/// A semaphore shared between processes (Python `multiprocessing.Semaphore` and
/// `BoundedSemaphore`). Permits taken by a process that dies are not given back.
public final class ProcessSemaphore: SharedByName, @unchecked Sendable {
    let counter: SharedCounter

    /// A semaphore starting at `value`; `bounded` refuses releases above it (ValueError).
    public init(value: Int = 1, bounded: Bool = false) throws(MemoryMapError) {
        guard value >= 0 else { throw MemoryMapError(.invalidArgument, "semaphore initial value must be >= 0") }
        counter = try SharedCounter(creating: SharedKind.semaphore, value: value, limit: bounded ? value : nil)
    }

    public init(opening name: String) throws(MemoryMapError) {
        counter = try SharedCounter(opening: name, kind: SharedKind.semaphore, what: "Semaphore")
    }

    public var name: String { counter.memory.name }

    /// Python `s.acquire(block, timeout)`.
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) throws(MemoryMapError) -> Bool {
        try counter.withLock { () throws(MemoryMapError) -> Bool in
            let value = counter.value
            guard blocking || value.pointee > 0 else { return false }
            guard counter.wait(until: { value.pointee > 0 }, timeout: timeout) else { return false }
            value.pointee -= 1
            return true
        }
    }

    /// Python `s.release(n)`.
    public func release(_ n: Int = 1) throws(MemoryMapError) {
        guard n >= 1 else { throw MemoryMapError(.invalidArgument, "n must be one or more") }
        try counter.withLock { () throws(MemoryMapError) in
            if let limit = counter.limit, counter.value.pointee + n > limit {
                throw MemoryMapError(.invalidArgument, "Semaphore released too many times")
            }
            counter.value.pointee += n
            if counter.waiters.pointee > 0 { counter.changed.broadcast() }
        }
    }

    /// The permits available now (Python `s.get_value()`).
    public var value: Int { (try? counter.withLock { counter.value.pointee }) ?? 0 }

}

/// An event shared between processes (Python `multiprocessing.Event`).
public final class ProcessEvent: SharedByName, @unchecked Sendable {
    let counter: SharedCounter

    public init() throws(MemoryMapError) {
        counter = try SharedCounter(creating: SharedKind.event, value: 0, limit: nil)
    }

    public init(opening name: String) throws(MemoryMapError) {
        counter = try SharedCounter(opening: name, kind: SharedKind.event, what: "Event")
    }

    public var name: String { counter.memory.name }

    /// Python `e.is_set()`.
    public var isSet: Bool { (try? counter.withLock { counter.value.pointee != 0 }) ?? false }

    /// Python `e.set()`.
    public func set() {
        _ = try? counter.withLock {
            counter.value.pointee = 1
            if counter.waiters.pointee > 0 { counter.changed.broadcast() }
        }
    }

    /// Python `e.clear()`.
    public func clear() { _ = try? counter.withLock { counter.value.pointee = 0 } }

    /// Python `e.wait(timeout)`: true once set.
    @discardableResult
    public func wait(timeout: Double? = nil) -> Bool {
        (try? counter.withLock {
            let flag = counter.value
            return counter.wait(until: { flag.pointee != 0 }, timeout: timeout)
        }) ?? false
    }

}

/// A condition variable shared between processes (Python `multiprocessing.Condition`), on
/// a `ProcessRLock` (its own by default) or a `ProcessLock`.
public final class ProcessCondition: Codable, @unchecked Sendable {
    let lock: SharedLockState
    let memory: SharedMemory
    let condition: SharedCondition

    /// A condition on `lock`, or on a new RLock.
    public convenience init(lock: ProcessRLock? = nil) throws(MemoryMapError) {
        let own: ProcessRLock
        if let lock { own = lock } else { own = try ProcessRLock() }
        try self.init(state: own.state)
    }

    /// A condition on a plain process-shared Lock.
    public convenience init(lock: ProcessLock) throws(MemoryMapError) {
        try self.init(state: lock.state)
    }

    private init(state: SharedLockState) throws(MemoryMapError) {
        lock = state
        memory = try SharedMemory(creating: SharedHeader.size + SharedCondition.size)
        condition = SharedCondition(pointer: memory.baseAddress + SharedHeader.size)
        try condition.initialize()
        SharedHeader.write(memory, kind: SharedKind.condition, detail: 0)
    }

    /// Opens a condition by its name and its lock's name (and offset).
    public init(opening name: String, lockName: String, lockOffset: Int = 0) throws(MemoryMapError) {
        memory = try SharedMemory(opening: name)
        _ = try SharedHeader.check(memory, kind: SharedKind.condition, what: "Condition")
        condition = SharedCondition(pointer: memory.baseAddress + SharedHeader.size)
        lock = try SharedLockState(opening: try SharedMemory(opening: lockName), at: lockOffset)
    }

    public var name: String { memory.name }
    public var lockName: String { lock.memory.name }

    /// Python `c.acquire(block, timeout)`.
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) throws(MemoryMapError) -> Bool {
        try lock.acquire(blocking: blocking, timeout: timeout).acquired
    }

    /// Python `c.release()`.
    public func release() throws(MemoryMapError) { try lock.release() }

    /// Python `with c:`.
    public func withLock<Result>(_ body: () throws -> Result) throws -> Result {
        try acquire()
        defer { try? release() }
        return try body()
    }

    /// Python `c.wait(timeout)`: gives up the lock (every level), waits for a notify, takes
    /// it back. False if the timeout passed first.
    @discardableResult
    public func wait(timeout: Double? = nil) throws(MemoryMapError) -> Bool {
        try lock.wait(on: condition, deadline: monotonicDeadline(timeout))
    }

    /// Python `c.wait_for(predicate, timeout)`.
    public func wait(for predicate: () throws -> Bool, timeout: Double? = nil) throws -> Bool {
        let deadline = timeout.map { monotonicSeconds() + $0 }
        while true {
            if try predicate() { return true }
            var remaining: Double?
            if let deadline {
                remaining = deadline - monotonicSeconds()
                if remaining! <= 0 { return false }
            }
            try wait(timeout: remaining)
        }
    }

    /// Python `c.notify(n)`.
    public func notify(_ n: Int = 1) throws(MemoryMapError) {
        guard lock.isOwnedByCaller else { throw MemoryMapError(.notOwner, "cannot notify on un-acquired lock") }
        if n > 0 { condition.signal(Int32(clamping: n)) }
    }

    /// Python `c.notify_all()`.
    public func notifyAll() throws(MemoryMapError) {
        guard lock.isOwnedByCaller else { throw MemoryMapError(.notOwner, "cannot notify on un-acquired lock") }
        condition.broadcast()
    }

    private enum CodingKeys: String, CodingKey { case name, lock, lockOffset }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(lockName, forKey: .lock)
        try container.encode(lock.offset, forKey: .lockOffset)
    }

    public convenience init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(
            opening: try container.decode(String.self, forKey: .name), lockName: try container.decode(String.self, forKey: .lock),
            lockOffset: try container.decode(Int.self, forKey: .lockOffset))
    }
}

func monotonicSeconds() -> Double { Double(colony_monotonic_ns()) / 1e9 }
