import Atomics
import Foundation
import Threading

/// Many readers at once, or one writer: the object store's mutations read, the cycle
/// collector's final check writes. Built for readers, which are every request: a reader
/// touches only its thread's own counter (one of 64, each on its own cache line) and reads
/// the writer's flag, so event loops do not contend; the writer raises the flag and waits
/// until every counter is zero (a Dekker handshake under sequentially consistent order).
/// A thread already reading may read again (an answer delivered inline while a call runs),
/// even while a writer waits. A thread reads one gate at a time.
final class ReadWriteGate: @unchecked Sendable {
    private static let slots = 64
    private static let stride = 128  // two cache lines: no false sharing with the neighbours
    private let counters: UnsafeMutableRawPointer
    private let isWriting = ManagedAtomic<Bool>(false)
    /// Held by the writer throughout; readers that meet the flag wait on it.
    private let writerLock = Lock()

    init() {
        counters = .allocate(byteCount: ReadWriteGate.slots * ReadWriteGate.stride, alignment: ReadWriteGate.stride)
        for slot in 0..<ReadWriteGate.slots { storage(slot).initialize(to: UnsafeAtomic<Int>.Storage(0)) }
    }

    deinit { counters.deallocate() }

    private func storage(_ slot: Int) -> UnsafeMutablePointer<UnsafeAtomic<Int>.Storage> {
        (counters + slot * ReadWriteGate.stride).assumingMemoryBound(to: UnsafeAtomic<Int>.Storage.self)
    }

    func reading<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        let thread = GateThread.current
        if thread.depth > 0 {
            thread.depth += 1
            defer { thread.depth -= 1 }
            return try body()
        }
        let counter = UnsafeAtomic<Int>(at: storage(thread.slot % ReadWriteGate.slots))
        while true {
            counter.wrappingIncrement(ordering: .sequentiallyConsistent)
            if !isWriting.load(ordering: .sequentiallyConsistent) { break }
            counter.wrappingDecrement(ordering: .sequentiallyConsistent)
            writerLock.withLock {}  // until the writer is done
        }
        thread.depth = 1
        defer {
            thread.depth = 0
            counter.wrappingDecrement(ordering: .releasing)
        }
        return try body()
    }

    func writing<Result>(_ body: () -> Result) -> Result {
        writerLock.withLock {
            isWriting.store(true, ordering: .sequentiallyConsistent)
            defer { isWriting.store(false, ordering: .sequentiallyConsistent) }
            for slot in 0..<ReadWriteGate.slots {
                let counter = UnsafeAtomic<Int>(at: storage(slot))
                while counter.load(ordering: .sequentiallyConsistent) != 0 { sched_yield() }
            }
            return body()
        }
    }
}

/// A thread's gate state: its slot, and how deeply it is reading now.
private final class GateThread {
    private static let nextSlot = ManagedAtomic<Int>(0)
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let status = pthread_key_create(&key) { pointer in
            if let pointer { Unmanaged<GateThread>.fromOpaque(pointer).release() }
        }
        precondition(status == 0, "pthread_key_create failed (\(status)): the process has no thread-local keys left")
        return key
    }()

    let slot = GateThread.nextSlot.loadThenWrappingIncrement(ordering: .relaxed)
    @exclusivity(unchecked) var depth = 0  // only its own thread touches it

    static var current: GateThread {
        if let pointer = pthread_getspecific(key) { return Unmanaged<GateThread>.fromOpaque(pointer).takeUnretainedValue() }
        let made = GateThread()
        pthread_setspecific(key, Unmanaged.passRetained(made).toOpaque())
        return made
    }
}
