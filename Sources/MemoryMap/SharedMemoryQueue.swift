import ColonyWire
import Atomics
import Glibc
import Threading

/// A bounded queue of byte messages in shared memory, for many producer and consumer
/// processes (Python `multiprocessing.Queue` and `JoinableQueue`, without the pipe and the
/// feeder thread). Codable values ride on top as MessagePack.
///
/// Slots have a fixed size (`maxMessageSize`). Every change is made under a robust mutex and
/// published with a single store after the message is copied, so a process killed in the
/// middle of a put or a get neither loses nor duplicates a message: the next process to take
/// the mutex carries on. Waiters are woken after the mutex is released: woken while it is
/// held, a waiter on the same CPU would run at once, find the mutex taken, and sleep again.
/// Pass it to a child process as an argument (it encodes as its name).
public final class SharedMemoryQueue: SharedByName, @unchecked Sendable {
    private struct Header {
        var capacity: Int
        var slotSize: Int
        var head: Int  // messages taken, ever
        var tail: Int  // messages published, ever
        var getWaiters: Int
        var putWaiters: Int
        var unfinished: Int
        var joinWaiters: Int
        /// Nonzero once `shutdown` was called (by any process).
        var shutDown: Int
    }

    private let memory: SharedMemory
    private let mutex: SharedMutex
    private let notEmpty: SharedCondition
    private let notFull: SharedCondition
    private let allDone: SharedCondition
    private static let headerOffset = SharedHeader.size + SharedMutex.size + 3 * SharedCondition.size
    private static let slotsOffset = headerOffset + 128
    private var header: UnsafeMutablePointer<Header> { (memory.baseAddress + SharedMemoryQueue.headerOffset).assumingMemoryBound(to: Header.self) }
    /// How many messages fit.
    public let capacity: Int
    /// The largest message, in bytes.
    public let maxMessageSize: Int
    /// Whether a blocked put or get of this process spins briefly (`SpinPolicy`) before it
    /// sleeps. Turn it off where the other side's work takes longer than a wake-up, or where
    /// more processes than CPUs are busy: spinning then only takes the CPU the other side needs.
    public var spinsBeforeSleeping = true
    /// Set by `close()`, for this process's use of the queue only.
    private let closedHere = ManagedAtomic<Bool>(false)

    /// A queue of up to `capacity` messages of up to `maxMessageSize` bytes each.
    public init(capacity: Int = 1024, maxMessageSize: Int = 1024) throws(MemoryMapError) {
        guard capacity >= 1, maxMessageSize >= 1, capacity <= 1 << 24, maxMessageSize <= 1 << 26 else {
            throw MemoryMapError(.invalidArgument, "a shared queue needs 1...16777216 slots of 1...67108864 bytes")
        }
        let slotSize = (maxMessageSize + 4 + 7) / 8 * 8
        memory = try SharedMemory(creating: SharedMemoryQueue.slotsOffset + capacity * slotSize)
        (mutex, notEmpty, notFull, allDone) = SharedMemoryQueue.parts(memory)
        try mutex.initialize(recursive: false)
        for condition in [notEmpty, notFull, allDone] { try condition.initialize() }
        self.capacity = capacity
        self.maxMessageSize = maxMessageSize
        header.pointee = Header(
            capacity: capacity, slotSize: slotSize, head: 0, tail: 0, getWaiters: 0, putWaiters: 0, unfinished: 0, joinWaiters: 0, shutDown: 0)
        SharedHeader.write(memory, kind: SharedKind.queue, detail: UInt64(maxMessageSize))
    }

    /// Opens the queue named `name`.
    public init(opening name: String) throws(MemoryMapError) {
        memory = try SharedMemory(opening: name)
        maxMessageSize = Int(try SharedHeader.check(memory, kind: SharedKind.queue, what: "SharedMemoryQueue"))
        (mutex, notEmpty, notFull, allDone) = SharedMemoryQueue.parts(memory)
        capacity = (memory.baseAddress + SharedMemoryQueue.headerOffset).assumingMemoryBound(to: Header.self).pointee.capacity
    }

    private static func parts(_ memory: SharedMemory) -> (SharedMutex, SharedCondition, SharedCondition, SharedCondition) {
        let base = memory.baseAddress + SharedHeader.size
        let conditions = base + SharedMutex.size
        return (
            SharedMutex(pointer: base), SharedCondition(pointer: conditions), SharedCondition(pointer: conditions + SharedCondition.size),
            SharedCondition(pointer: conditions + 2 * SharedCondition.size)
        )
    }

    /// The shared memory name other processes open it by.
    public var name: String { memory.name }

    private func slot(_ index: Int) -> UnsafeMutableRawPointer {
        memory.baseAddress + SharedMemoryQueue.slotsOffset + (index % capacity) * header.pointee.slotSize
    }

    private func locked<Result>(_ body: () throws(MemoryMapError) -> Result) throws(MemoryMapError) -> Result {
        guard !closedHere.load(ordering: .relaxed) else {
            throw MemoryMapError(.closed, "the queue was closed in this process (close()); open it again by name to use it")
        }
        mutex.lockForState()
        defer { try? mutex.unlock() }
        return try body()
    }

    /// Waits (mutex held) on `condition` until `ready`; false at the deadline.
    private func wait(_ condition: SharedCondition, _ waiters: WritableKeyPath<Header, Int>, deadline: UInt64, until ready: () -> Bool) -> Bool {
        while !ready() {
            header.pointee[keyPath: waiters] += 1
            let inTime = condition.wait(mutex, deadline: deadline, spinRounds: spinsBeforeSleeping ? SpinPolicy.rounds : 0)
            header.pointee[keyPath: waiters] -= 1
            if !inTime { return ready() }
        }
        return true
    }

    /// Python `q.put(obj, block, timeout)` for bytes; `.full` when there is no room in time.
    public func put(bytes message: some Collection<UInt8>, block: Bool = true, timeout: Double? = nil) throws(MemoryMapError) {
        guard message.count <= maxMessageSize else {
            throw MemoryMapError(.messageTooLarge, "a \(message.count)-byte message does not fit this queue's \(maxMessageSize)-byte slots")
        }
        let deadline = monotonicDeadline(timeout)
        let getterWaits = try locked { () throws(MemoryMapError) -> Bool in
            let hasRoom = { self.header.pointee.tail - self.header.pointee.head < self.capacity }
            let canPut = { hasRoom() || self.header.pointee.shutDown != 0 }
            guard canPut() || (block && wait(notFull, \.putWaiters, deadline: deadline, until: canPut)) else {
                throw MemoryMapError(.full, "the queue is full")
            }
            guard header.pointee.shutDown == 0 else { throw MemoryMapError(.shutDown, "put() on a queue that was shut down") }
            let tail = header.pointee.tail
            let destination = slot(tail)
            destination.storeBytes(of: UInt32(message.count), as: UInt32.self)
            let copied: Void? = message.withContiguousStorageIfAvailable { source in
                (destination + 4).copyMemory(from: source.baseAddress!, byteCount: source.count)
            }
            if copied == nil { for (offset, byte) in message.enumerated() { (destination + 4 + offset).storeBytes(of: byte, as: UInt8.self) } }
            header.pointee.unfinished += 1
            header.pointee.tail = tail + 1  // publishes the message
            return header.pointee.getWaiters > 0
        }
        if getterWaits { notEmpty.broadcast() }
    }

    /// Python `q.get(block, timeout)` for bytes; `.empty` when nothing arrives in time.
    public func getBytes(block: Bool = true, timeout: Double? = nil) throws(MemoryMapError) -> [UInt8] {
        let deadline = monotonicDeadline(timeout)
        let (message, putterWaits) = try locked { () throws(MemoryMapError) -> ([UInt8], Bool) in
            let hasMessage = { self.header.pointee.tail > self.header.pointee.head }
            let canGet = { hasMessage() || self.header.pointee.shutDown != 0 }
            guard canGet() || (block && wait(notEmpty, \.getWaiters, deadline: deadline, until: canGet)) else {
                throw MemoryMapError(.empty, "the queue is empty")
            }
            guard hasMessage() else { throw MemoryMapError(.shutDown, "get() on a queue that was shut down and is empty") }
            let head = header.pointee.head
            let source = slot(head)
            let count = Int(source.load(as: UInt32.self))
            let message = [UInt8](UnsafeRawBufferPointer(start: source + 4, count: min(count, maxMessageSize)))
            header.pointee.head = head + 1  // consumes it
            return (message, header.pointee.putWaiters > 0)
        }
        if putterWaits { notFull.broadcast() }
        return message
    }

    /// Python `q.put(obj)`: a Codable value, as MessagePack.
    public func put<Value: Encodable>(_ value: Value, block: Bool = true, timeout: Double? = nil) throws {
        let buffer = try WireValueEncoder().encode(value).encoded()
        try put(bytes: buffer.readableBytesView, block: block, timeout: timeout)
    }

    /// Python `q.get()`: a Codable value.
    public func get<Value: Decodable>(_ type: Value.Type, block: Bool = true, timeout: Double? = nil) throws -> Value {
        try WireValueDecoder().decode(type, from: try WireValue(messagePack: getBytes(block: block, timeout: timeout)))
    }

    /// Python 3.13 `q.shutdown(immediate=False)`, for every process using the queue: puts
    /// throw `.shutDown` from now on, gets once the queue is empty; blocked calls wake.
    /// `immediate` also drops the messages still queued (each counted done, so `join`
    /// returns).
    public func shutdown(immediate: Bool = false) throws(MemoryMapError) {
        try locked { () throws(MemoryMapError) in
            header.pointee.shutDown = 1
            if immediate {
                let dropped = header.pointee.tail - header.pointee.head
                header.pointee.head = header.pointee.tail
                header.pointee.unfinished = max(0, header.pointee.unfinished - dropped)
            }
            notEmpty.broadcast()
            notFull.broadcast()
            if header.pointee.unfinished == 0 { allDone.broadcast() }
        }
    }

    /// Whether `shutdown` was called.
    public var isShutDown: Bool { (try? locked { header.pointee.shutDown != 0 }) ?? false }

    /// Python `q.close()`: this process will use the queue no more; its puts and gets
    /// throw `.closed` from now on (other processes carry on).
    public func close() { closedHere.store(true, ordering: .relaxed) }

    /// Python `q.qsize()`.
    public var qsize: Int { (try? locked { header.pointee.tail - header.pointee.head }) ?? 0 }
    /// Python `q.empty()`.
    public var isEmpty: Bool { qsize == 0 }
    /// Python `q.full()`.
    public var isFull: Bool { qsize >= capacity }

    /// Python `JoinableQueue.task_done()`.
    public func taskDone() throws(MemoryMapError) {
        try locked { () throws(MemoryMapError) in
            guard header.pointee.unfinished > 0 else { throw MemoryMapError(.invalidArgument, "task_done() called too many times") }
            header.pointee.unfinished -= 1
            if header.pointee.unfinished == 0, header.pointee.joinWaiters > 0 { allDone.broadcast() }
        }
    }

    /// Python `JoinableQueue.join()`: waits until every message put has been marked done;
    /// false if the timeout passed first.
    @discardableResult
    public func join(timeout: Double? = nil) -> Bool {
        let deadline = monotonicDeadline(timeout)
        return (try? locked { wait(allDone, \.joinWaiters, deadline: deadline) { self.header.pointee.unfinished == 0 } }) ?? false
    }

}

