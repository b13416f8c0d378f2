import Dispatch
import ColonyWire
import Threading

// Proxies of the manager's blocking objects. As with the data proxies, every method exists
// as `async` and as a blocking twin for plain threads. Waits happen on the manager (the call
// is parked there, holding no thread); timeouts are the manager's; cancelling the task of an
// async wait cancels it on the manager.

/// Who holds a shared lock: the current Swift task, or outside Swift concurrency the current
/// thread (Python: the thread). RLock recursion and release checks use it.
public enum LockOwner {
    /// The identity the manager records for calls made here.
    public static var current: UInt64 {
        if let task = withUnsafeCurrentTask(body: { $0 }) {
            return UInt64(UInt(bitPattern: task.hashValue)) | (1 << 63)
        }
        return UInt64(Thread.currentIdent) & ~(1 << 63)
    }
}

/// A lock on the manager, usable with `withLock` in async code (Python `async with`-like).
public protocol AsyncLocking: Sendable {
    /// Python `acquire(blocking, timeout)`.
    @discardableResult
    func acquire(blocking: Bool, timeout: Double?) async throws -> Bool
    /// Python `release()`.
    func release() async throws
}

extension AsyncLocking {
    /// Python `with lock:` in async code: releases when `body` returns or throws.
    public func withLock<Result>(_ body: () async throws -> Result) async throws -> Result {
        try await acquire(blocking: true, timeout: nil)
        do {
            let result = try await body()
            try await release()
            return result
        } catch {
            try? await release()
            throw error
        }
    }
}

/// A shared queue (Python `manager.Queue()`, `JoinableQueue()`, and `queue.LifoQueue` /
/// `PriorityQueue` served by the manager). Empty, Full and ShutDown arrive as `QueueEmpty`,
/// `QueueFull` and `QueueShutDown`, as from a local `Queue`.
public struct QueueProxy<Element: Codable & Sendable>: Proxy, Codable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `q.put(item, block, timeout)`.
    public func put(_ item: Element, block: Bool = true, timeout: Double? = nil) async throws {
        try await handle.wait(QueueCall.put(wire(item), block: block, timeout: timeout))
    }
    public func put(_ item: Element, block: Bool = true, timeout: Double? = nil) throws {
        try handle.runBlocking(QueueCall.put(wire(item), block: block, timeout: timeout))
    }
    /// Python `q.put_nowait(item)`.
    public func putNowait(_ item: Element) async throws { try await put(item, block: false) }
    public func putNowait(_ item: Element) throws { try put(item, block: false) }
    /// Python `q.get(block, timeout)`.
    public func get(block: Bool = true, timeout: Double? = nil) async throws -> Element {
        try handle.decode(Element.self, try await handle.wait(QueueCall.get(block: block, timeout: timeout)))
    }
    public func get(block: Bool = true, timeout: Double? = nil) throws -> Element {
        try handle.decode(Element.self, try handle.runBlocking(QueueCall.get(block: block, timeout: timeout)))
    }
    /// Python `q.get_nowait()`.
    public func getNowait() async throws -> Element { try await get(block: false) }
    public func getNowait() throws -> Element { try get(block: false) }
    /// Beyond Python: puts every item in order, in one round trip, waiting for room as needed.
    public func put(contentsOf items: [Element], timeout: Double? = nil) async throws {
        try await handle.wait(QueueCall.putMany(items.map(wire), timeout: timeout))
    }
    public func put(contentsOf items: [Element], timeout: Double? = nil) throws {
        try handle.runBlocking(QueueCall.putMany(items.map(wire), timeout: timeout))
    }
    /// Beyond Python: takes up to `max` items at once (at least one, waiting like `get`).
    public func get(upTo max: Int, block: Bool = true, timeout: Double? = nil) async throws -> [Element] {
        try await handle.wait(QueueCall.getMany(max: max, block: block, timeout: timeout)).map { try handle.decode(Element.self, $0) }
    }
    public func get(upTo max: Int, block: Bool = true, timeout: Double? = nil) throws -> [Element] {
        try handle.runBlocking(QueueCall.getMany(max: max, block: block, timeout: timeout)).map { try handle.decode(Element.self, $0) }
    }
    /// Python `q.qsize()`.
    public func qsize() async throws -> Int { try await handle.run(QueueCall.qsize()) }
    public func qsize() throws -> Int { try handle.runBlocking(QueueCall.qsize()) }
    /// Python `q.empty()`.
    public func isEmpty() async throws -> Bool { try await handle.run(QueueCall.empty()) }
    public func isEmpty() throws -> Bool { try handle.runBlocking(QueueCall.empty()) }
    /// Python `q.full()`.
    public func isFull() async throws -> Bool { try await handle.run(QueueCall.full()) }
    public func isFull() throws -> Bool { try handle.runBlocking(QueueCall.full()) }
    /// Python `q.task_done()`; ValueError (a `RemoteError`) when called more often than `put`.
    public func taskDone() async throws { try await handle.run(QueueCall.taskDone()) }
    public func taskDone() throws { try handle.runBlocking(QueueCall.taskDone()) }
    /// Python `q.join()`: waits until every item put has been marked done; with a timeout,
    /// returns false if that did not happen in time.
    @discardableResult
    public func join(timeout: Double? = nil) async throws -> Bool { try await handle.wait(QueueCall.join(timeout: timeout)) }
    @discardableResult
    public func join(timeout: Double? = nil) throws -> Bool { try handle.runBlocking(QueueCall.join(timeout: timeout)) }
    /// Python 3.13 `q.shutdown(immediate)`.
    public func shutdown(immediate: Bool = false) async throws { try await handle.run(QueueCall.shutdown(immediate: immediate)) }
    public func shutdown(immediate: Bool = false) throws { try handle.runBlocking(QueueCall.shutdown(immediate: immediate)) }
}

/// A shared Lock or RLock (Python `manager.Lock()`, `manager.RLock()`). It conforms to the
/// Threading module's `Locking`, so a local `Condition` or `withLock` works on it.
///
/// Beyond Python, `acquireGrant` reports a fencing token (rising with every grant) and
/// whether the previous holder died holding it (its session ended: crash, kill, network
/// loss), in which case what it guarded may be half-updated.
public final class LockProxy: Proxy, Locking, AsyncLocking, Codable, @unchecked Sendable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    init(handle: ProxyHandle) { self.handle = handle }

    /// Whether this is an RLock.
    public var isReentrant: Bool { reference.type == .rlock }

    /// Python `L.acquire(blocking, timeout)`, with the grant's fencing token and owner-died flag.
    public func acquireGrant(blocking: Bool = true, timeout: Double? = nil) async throws -> LockGrant {
        try await handle.wait(LockCall.acquire(owner: LockOwner.current, blocking: blocking, timeout: timeout))
    }
    public func acquireGrant(blocking: Bool = true, timeout: Double? = nil) throws -> LockGrant {
        try handle.runBlocking(LockCall.acquire(owner: LockOwner.current, blocking: blocking, timeout: timeout))
    }
    /// Python `L.acquire(blocking, timeout)`: true when taken.
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) async throws -> Bool {
        try await acquireGrant(blocking: blocking, timeout: timeout).acquired
    }
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) throws -> Bool {
        try acquireGrant(blocking: blocking, timeout: timeout).acquired
    }
    /// Python `L.release()`; NotOwner for an RLock held by someone else or a lock not held.
    public func release() async throws { try await handle.run(LockCall.release(owner: LockOwner.current)) }
    public func release() throws { try handle.runBlocking(LockCall.release(owner: LockOwner.current)) }
    /// Python `L.locked()`.
    public func locked() async throws -> Bool { try await handle.run(LockCall.locked()) }
    public func locked() throws -> Bool { try handle.runBlocking(LockCall.locked()) }

    public func isOwnedByCurrentThread() throws -> Bool { try handle.runBlocking(LockCall.isOwned(owner: LockOwner.current)) }

    /// For a local `Condition` over this lock: an RLock gives up every level.
    public func releaseForWait() throws -> Int {
        var levels = 0
        repeat {
            try release()
            levels += 1
        } while try isReentrant && isOwnedByCurrentThread()
        return levels
    }

    public func restoreAfterWait(_ saved: Int) throws {
        for _ in 0..<saved { _ = try acquire() }
    }
}

/// A shared Semaphore or BoundedSemaphore (Python `manager.Semaphore(n)`). Permits a client
/// took and did not give back are returned when its session ends.
public struct SemaphoreProxy: Proxy, Codable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `s.acquire(blocking, timeout)`, with the grant's token and owner-died flag.
    public func acquireGrant(blocking: Bool = true, timeout: Double? = nil) async throws -> LockGrant {
        try await handle.wait(LockCall.acquire(owner: LockOwner.current, blocking: blocking, timeout: timeout))
    }
    public func acquireGrant(blocking: Bool = true, timeout: Double? = nil) throws -> LockGrant {
        try handle.runBlocking(LockCall.acquire(owner: LockOwner.current, blocking: blocking, timeout: timeout))
    }
    /// Python `s.acquire(blocking, timeout)`.
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) async throws -> Bool {
        try await acquireGrant(blocking: blocking, timeout: timeout).acquired
    }
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) throws -> Bool {
        try acquireGrant(blocking: blocking, timeout: timeout).acquired
    }
    /// Python `s.release(n)`; a BoundedSemaphore refuses to go above its start (ValueError).
    public func release(_ n: Int = 1) async throws { try await handle.run(LockCall.release(owner: LockOwner.current, permits: n)) }
    public func release(_ n: Int = 1) throws { try handle.runBlocking(LockCall.release(owner: LockOwner.current, permits: n)) }
    /// The permits available now (Python `s._value`).
    public func value() async throws -> Int { try await handle.run(LockCall.value()) }
    public func value() throws -> Int { try handle.runBlocking(LockCall.value()) }
}

/// A shared Condition (Python `manager.Condition(lock)`): on its own RLock, or on a shared
/// Lock or RLock.
public final class ConditionProxy: Proxy, AsyncLocking, Codable, @unchecked Sendable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    init(handle: ProxyHandle) { self.handle = handle }

    /// Python `c.acquire(blocking, timeout)`.
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) async throws -> Bool {
        try await handle.wait(LockCall.acquire(owner: LockOwner.current, blocking: blocking, timeout: timeout)).acquired
    }
    @discardableResult
    public func acquire(blocking: Bool = true, timeout: Double? = nil) throws -> Bool {
        try handle.runBlocking(LockCall.acquire(owner: LockOwner.current, blocking: blocking, timeout: timeout)).acquired
    }
    /// Python `c.release()`.
    public func release() async throws { try await handle.run(LockCall.release(owner: LockOwner.current)) }
    public func release() throws { try handle.runBlocking(LockCall.release(owner: LockOwner.current)) }
    /// Python `c.wait(timeout)`: gives up the lock, waits for a notify, takes the lock back.
    /// False if the timeout passed first. NotOwner without the lock.
    @discardableResult
    public func wait(timeout: Double? = nil) async throws -> Bool {
        try await handle.wait(ConditionCall.wait(owner: LockOwner.current, timeout: timeout))
    }
    @discardableResult
    public func wait(timeout: Double? = nil) throws -> Bool {
        try handle.runBlocking(ConditionCall.wait(owner: LockOwner.current, timeout: timeout))
    }
    /// Python `c.wait_for(predicate, timeout)`: re-checks `predicate` here after each wake-up.
    public func wait(for predicate: () async throws -> Bool, timeout: Double? = nil) async throws -> Bool {
        let deadline = timeout.map { ContinuousClock.now + .seconds($0) }
        while true {
            if try await predicate() { return true }
            var remaining: Double?
            if let deadline {
                let left = ContinuousClock.now.duration(to: deadline)
                remaining = Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
                if remaining! <= 0 { return false }
            }
            try await wait(timeout: remaining)
        }
    }
    public func wait(for predicate: () throws -> Bool, timeout: Double? = nil) throws -> Bool {
        let deadline = timeout.map { ContinuousClock.now + .seconds($0) }
        while true {
            if try predicate() { return true }
            var remaining: Double?
            if let deadline {
                let left = ContinuousClock.now.duration(to: deadline)
                remaining = Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
                if remaining! <= 0 { return false }
            }
            try wait(timeout: remaining)
        }
    }
    /// Python `c.notify(n)`.
    public func notify(_ n: Int = 1) async throws { try await handle.run(ConditionCall.notify(owner: LockOwner.current, n)) }
    public func notify(_ n: Int = 1) throws { try handle.runBlocking(ConditionCall.notify(owner: LockOwner.current, n)) }
    /// Python `c.notify_all()`.
    public func notifyAll() async throws { try await handle.run(ConditionCall.notifyAll(owner: LockOwner.current)) }
    public func notifyAll() throws { try handle.runBlocking(ConditionCall.notifyAll(owner: LockOwner.current)) }

    /// Python `with c:`.
    public func withLock<Result>(_ body: () throws -> Result) throws -> Result {
        try acquire()
        defer { try? release() }
        return try body()
    }
}

/// A shared Event (Python `manager.Event()`).
public struct EventProxy: Proxy, Codable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `e.set()`: wakes every waiter.
    public func set() async throws { try await handle.run(EventCall.set()) }
    public func set() throws { try handle.runBlocking(EventCall.set()) }
    /// Python `e.clear()`.
    public func clear() async throws { try await handle.run(EventCall.clear()) }
    public func clear() throws { try handle.runBlocking(EventCall.clear()) }
    /// Python `e.is_set()`.
    public func isSet() async throws -> Bool { try await handle.run(EventCall.isSet()) }
    public func isSet() throws -> Bool { try handle.runBlocking(EventCall.isSet()) }
    /// Python `e.wait(timeout)`: true once set, false if the timeout passed first.
    @discardableResult
    public func wait(timeout: Double? = nil) async throws -> Bool { try await handle.wait(EventCall.wait(timeout: timeout)) }
    @discardableResult
    public func wait(timeout: Double? = nil) throws -> Bool { try handle.runBlocking(EventCall.wait(timeout: timeout)) }
}

/// A shared Barrier (Python `manager.Barrier(parties, action, timeout)`). The last party to
/// arrive gets index 0. A barrier's action runs in the client that created it, whichever
/// client completes the round, before any party goes on; if it throws, or that client is
/// gone, the parties get `BrokenBarrierError` (a `RemoteError` `.brokenBarrier` saying why).
public struct BarrierProxy: Proxy, Codable {
    let handle: ProxyHandle
    public var reference: ObjectRef { handle.reference }
    public func encode(to encoder: any Encoder) throws { try encodeProxy(handle, to: encoder) }

    /// Python `b.wait(timeout)`: this party's index; `BrokenBarrierError` if the barrier is
    /// or becomes broken (reset, abort, a timeout, a party that died, a failed action).
    @discardableResult
    public func wait(timeout: Double? = nil) async throws -> Int { try await handle.wait(BarrierCall.wait(timeout: timeout)) }
    @discardableResult
    public func wait(timeout: Double? = nil) throws -> Int { try handle.runBlocking(BarrierCall.wait(timeout: timeout)) }

    /// Python `b.reset()`.
    public func reset() async throws { try await handle.run(BarrierCall.reset()) }
    public func reset() throws { try handle.runBlocking(BarrierCall.reset()) }
    /// Python `b.abort()`.
    public func abort() async throws { try await handle.run(BarrierCall.abort()) }
    public func abort() throws { try handle.runBlocking(BarrierCall.abort()) }
    /// Python `b.parties`.
    public func parties() async throws -> Int { try await handle.run(BarrierCall.parties()) }
    public func parties() throws -> Int { try handle.runBlocking(BarrierCall.parties()) }
    /// Python `b.n_waiting`.
    public func nWaiting() async throws -> Int { try await handle.run(BarrierCall.nWaiting()) }
    public func nWaiting() throws -> Int { try handle.runBlocking(BarrierCall.nWaiting()) }
    /// Python `b.broken`.
    public func isBroken() async throws -> Bool { try await handle.run(BarrierCall.broken()) }
    public func isBroken() throws -> Bool { try handle.runBlocking(BarrierCall.broken()) }
}

extension Manager {
    /// Python `manager.Queue(maxsize)`; with a name, creates it or opens the existing one.
    public func queue<Element: Codable & Sendable>(_ name: String? = nil, _ elementType: Element.Type, maxsize: Int = 0) async throws
        -> QueueProxy<Element>
    {
        QueueProxy(handle: try await make(.queue, name, ["maxsize": .integer(maxsize)]))
    }

    /// Python `manager.JoinableQueue(maxsize)`.
    public func joinableQueue<Element: Codable & Sendable>(_ name: String? = nil, _ elementType: Element.Type, maxsize: Int = 0)
        async throws -> QueueProxy<Element>
    {
        QueueProxy(handle: try await make(.joinableQueue, name, ["maxsize": .integer(maxsize)]))
    }

    /// Python `queue.LifoQueue(maxsize)`, served by the manager.
    public func lifoQueue<Element: Codable & Sendable>(_ name: String? = nil, _ elementType: Element.Type, maxsize: Int = 0)
        async throws -> QueueProxy<Element>
    {
        QueueProxy(handle: try await make(.lifoQueue, name, ["maxsize": .integer(maxsize)]))
    }

    /// Python `queue.PriorityQueue(maxsize)`, served by the manager: the smallest item first,
    /// in Python's order (tuples become arrays: `[priority, data]`).
    public func priorityQueue<Element: Codable & Sendable>(_ name: String? = nil, _ elementType: Element.Type, maxsize: Int = 0)
        async throws -> QueueProxy<Element>
    {
        QueueProxy(handle: try await make(.priorityQueue, name, ["maxsize": .integer(maxsize)]))
    }

    /// Python `manager.Lock()`.
    public func lock(_ name: String? = nil) async throws -> LockProxy { LockProxy(handle: try await make(.lock, name, .null)) }

    /// Python `manager.RLock()`.
    public func rlock(_ name: String? = nil) async throws -> LockProxy { LockProxy(handle: try await make(.rlock, name, .null)) }

    /// Python `manager.Semaphore(value)`.
    public func semaphore(_ name: String? = nil, value: Int = 1) async throws -> SemaphoreProxy {
        SemaphoreProxy(handle: try await make(.semaphore, name, ["value": .integer(value)]))
    }

    /// Python `manager.BoundedSemaphore(value)`.
    public func boundedSemaphore(_ name: String? = nil, value: Int = 1) async throws -> SemaphoreProxy {
        SemaphoreProxy(handle: try await make(.boundedSemaphore, name, ["value": .integer(value)]))
    }

    /// Python `manager.Condition(lock)`: on `lock` (a shared Lock or RLock), or on its own RLock.
    public func condition(_ name: String? = nil, lock: LockProxy? = nil) async throws -> ConditionProxy {
        ConditionProxy(handle: try await make(.condition, name, ["lock": lock.map { .objectRef($0.reference) } ?? .null]))
    }

    /// Python `manager.Event()`.
    public func event(_ name: String? = nil) async throws -> EventProxy { EventProxy(handle: try await make(.event, name, .null)) }

    /// Python `manager.Barrier(parties, action, timeout)`. `timeout` is the default for
    /// `wait`. `action` runs here, in this client, once per round before any party (in any
    /// process) goes on, for as long as this connection lasts.
    public func barrier(
        _ name: String? = nil, parties: Int, timeout: Double? = nil, action: (@Sendable () throws -> Void)? = nil
    ) async throws -> BarrierProxy {
        let options: WireValue = ["parties": .integer(parties), "timeout": timeout.map(WireValue.double) ?? .null, "action": .bool(action != nil)]
        let handle = try await make(.barrier, name, options)
        if let action { BarrierProxy.awaitRound(action, for: handle) }  // asked before this returns: the manager knows who runs it
        return BarrierProxy(handle: handle)
    }

    /// A live queue proxy for a received reference (a queue put on a queue, stored in a dict...).
    public func queue<Element: Codable & Sendable>(_ reference: ObjectRef, _ elementType: Element.Type) throws -> QueueProxy<Element> {
        guard [.queue, .joinableQueue, .lifoQueue, .priorityQueue].contains(reference.type) else {
            throw RemoteError(.wrongType, "the reference is to a \(reference.type), not a queue")
        }
        return QueueProxy(handle: ProxyHandle(manager: self, reference: reference))
    }

    /// A live lock proxy for a received reference to a Lock or RLock.
    public func lock(_ reference: ObjectRef) throws -> LockProxy {
        guard reference.type == .lock || reference.type == .rlock else {
            throw RemoteError(.wrongType, "the reference is to a \(reference.type), not a lock")
        }
        return LockProxy(handle: ProxyHandle(manager: self, reference: reference))
    }
}

extension ValueProxy {
    /// Python `v.get_lock()`: the RLock that guards this value (one per value, made on first use).
    public func getLock() async throws -> LockProxy { try handle.manager.lock(try await handle.run(ValueCall.getLock())) }
    public func getLock() throws -> LockProxy { try handle.manager.lock(try handle.runBlocking(ValueCall.getLock())) }
}

extension ArrayProxy {
    /// Python `a.get_lock()`.
    public func getLock() async throws -> LockProxy { try handle.manager.lock(try await handle.run(ArrayCall.getLock())) }
    public func getLock() throws -> LockProxy { try handle.manager.lock(try handle.runBlocking(ArrayCall.getLock())) }
}

// MARK: - Proxies as values

/// A proxy encodes as its object reference (MessagePack ext type 1 on the wire), or, as an
/// argument of a child process, with the address of its manager too, so that the child can
/// connect on its own (with the authkey it inherits, as Python's proxies do).
func encodeProxy(_ handle: ProxyHandle, to encoder: any Encoder) throws {
    if encoder.userInfo[.colonyProcessTransfer] != nil {
        var container = encoder.container(keyedBy: TransferKeys.self)
        try container.encode(handle.reference, forKey: .proxy)
        try container.encode(handle.manager.address, forKey: .manager)
        try container.encode(handle.manager.instance, forKey: .instance)
    } else {
        var container = encoder.singleValueContainer()
        try container.encode(handle.reference)
    }
}

private enum TransferKeys: String, CodingKey {
    case proxy = "colony_proxy"
    case manager
    case instance
}

extension CodingUserInfoKey {
    /// Set while encoding a child process's arguments: proxies carry their manager's address.
    static let colonyProcessTransfer = CodingUserInfoKey(rawValue: "colony.process-transfer")!
}

/// A proxy decodes from its object reference inside a value received from a manager (a proxy
/// stored in a dict, put on a queue), as Python unpickles a proxy: the result is live on that
/// manager and keeps the object alive while it exists. In a child process, a proxy passed as
/// an argument connects to its manager and attaches to the object.
func decodeHandle(_ decoder: any Decoder, accepting types: [ObjectType]) throws -> ProxyHandle {
    let reference: ObjectRef
    let manager: Manager
    /// The instance of the manager the proxy was passed on from, when it has restarted since.
    var restartedSince: String?
    if case .map = try decoder.singleValueContainer().decode(WireValue.self) {
        let container = try decoder.container(keyedBy: TransferKeys.self)
        reference = try container.decode(ObjectRef.self, forKey: .proxy)
        manager = try Manager.transferred(to: try container.decode(ManagerAddress.self, forKey: .manager))
        if let sent = try container.decodeIfPresent(String.self, forKey: .instance), sent != manager.instance { restartedSince = sent }
    } else {
        reference = try decoder.singleValueContainer().decode(ObjectRef.self)
        guard let received = decoder.userInfo[.colonyManager] as? Manager else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: decoder.codingPath,
                debugDescription: "a proxy decodes only from a value received through a Manager's proxy; use manager.dict(reference, ...) and friends for a bare ObjectRef"))
        }
        manager = received
    }
    guard types.contains(reference.type) else {
        throw DecodingError.typeMismatch(ObjectRef.self, .init(
            codingPath: decoder.codingPath, debugDescription: "the reference is to a \(reference.type), not a \(types.map { "\($0)" }.joined(separator: " or "))"))
    }
    if decoder.userInfo[.colonyManager] == nil {
        // Not received through this connection: take a reference of this session's own.
        // Ids never repeat across restarts, so after one the id names the same object (a
        // named object the manager kept, --persist) or nothing.
        do {
            _ = try manager.connection.callBlocking(.attach(object: reference.id))
        } catch let error as RemoteError where error.code == .noSuchObject && restartedSince != nil {
            throw RemoteError(
                .noSuchObject,
                "the manager restarted since this \(reference.type.name) proxy was passed on (instance \(restartedSince!.prefix(8)), now \(manager.instance.prefix(8))) and did not keep the object it named (only named objects are kept, with --persist)")
        }
    }
    return ProxyHandle(manager: manager, reference: reference)
}

extension DictProxy {
    public init(from decoder: any Decoder) throws { handle = try decodeHandle(decoder, accepting: [.dict]) }
}

extension ListProxy {
    public init(from decoder: any Decoder) throws { handle = try decodeHandle(decoder, accepting: [.list]) }
}

extension NamespaceProxy {
    public init(from decoder: any Decoder) throws { handle = try decodeHandle(decoder, accepting: [.namespace]) }
}

extension ValueProxy {
    public init(from decoder: any Decoder) throws { handle = try decodeHandle(decoder, accepting: [.value]) }
}

extension ArrayProxy {
    public init(from decoder: any Decoder) throws { handle = try decodeHandle(decoder, accepting: [.array]) }
}

extension QueueProxy {
    public init(from decoder: any Decoder) throws {
        handle = try decodeHandle(decoder, accepting: [.queue, .joinableQueue, .lifoQueue, .priorityQueue])
    }
}

extension LockProxy {
    public convenience init(from decoder: any Decoder) throws { self.init(handle: try decodeHandle(decoder, accepting: [.lock, .rlock])) }
}

extension SemaphoreProxy {
    public init(from decoder: any Decoder) throws { handle = try decodeHandle(decoder, accepting: [.semaphore, .boundedSemaphore]) }
}

extension ConditionProxy {
    public convenience init(from decoder: any Decoder) throws { self.init(handle: try decodeHandle(decoder, accepting: [.condition])) }
}

extension EventProxy {
    public init(from decoder: any Decoder) throws { handle = try decodeHandle(decoder, accepting: [.event]) }
}

extension BarrierProxy {
    public init(from decoder: any Decoder) throws { handle = try decodeHandle(decoder, accepting: [.barrier]) }

    /// The creator's side of the action: asks the manager to say when a round fills, then
    /// runs the action (off the event loop: it may call the manager) and reports, and asks
    /// again; until the connection or the barrier is gone.
    static func awaitRound(_ action: @escaping @Sendable () throws -> Void, for handle: ProxyHandle) {
        let connection = handle.manager.connection
        connection.send(BarrierCall.awaitAction().request(object: handle.reference.id)) { answer in
            guard case .success = answer else { return }
            DispatchQueue.global().async {
                var failure: String?
                do { try action() } catch { failure = "\(error)" }
                connection.send(BarrierCall.actionDone(failure: failure).request(object: handle.reference.id)) { answer in
                    if case .success = answer { awaitRound(action, for: handle) }
                }
            }
        }
    }
}

