import ColonyWire
import Glibc
import MemoryMap
import Testing
import Threading

/// Sends a value through the wire coding, as a child process's argument travels.
func roundTrip<Value: Codable>(_ value: Value) throws -> Value {
    try WireValueDecoder().decode(Value.self, from: try WireValueEncoder().encode(value))
}

/// Runs `body` on another thread and waits for it.
func onAnotherThread<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) throws -> Result {
    let future = Future<Result>()
    let thread = Threading.Thread(target: {
        do { try future.setResult(try body()) } catch { try? future.setException(error) }
    })
    try thread.start()
    return try future.result(timeout: 30)
}

@Suite struct SharedMemoryTests {
    @Test func namedMemoryIsSharedAndGoesWithItsCreator() throws {
        var created: SharedMemory? = try SharedMemory(creating: 4096)
        let name = created!.name
        created!.buffer[10] = 42
        let opened = try SharedMemory(opening: name)
        #expect(opened.size == 4096 && opened.buffer[10] == 42 && !opened.isCreator)
        opened.buffer[11] = 7
        #expect(created!.buffer[11] == 7)
        created = nil  // the creator removes the name; the mapping already open stays valid
        expectError(.system) { _ = try SharedMemory(opening: name) }
        #expect(opened.buffer[10] == 42)
        expectError(.invalidArgument) { _ = try SharedMemory(creating: 0) }
        expectError(.invalidArgument) { _ = try SharedMemory(opening: "a/b") }
        let named = try SharedMemory(creating: 16, name: "colony-test-\(getpid())")
        expectError(.system) { _ = try SharedMemory(creating: 16, name: named.name) }  // exists already
    }

    @Test func openingAsTheWrongKindIsAnError() throws {
        let lock = try ProcessLock()
        let value = try SharedValue<Int32>(1)
        expectError(.wrongType) { _ = try ProcessRLock(opening: lock.name) }
        expectError(.wrongType) { _ = try SharedMemoryQueue(opening: lock.name) }
        expectError(.wrongType) { _ = try SharedValue<Int64>(opening: value.name) }
        expectError(.wrongType) { _ = try SharedArray<Int32>(opening: value.name) }
        expectError(.wrongType) { _ = try ProcessEvent(opening: value.name) }
    }
}

@Suite struct ProcessLockTests {
    @Test func lockAcquireReleaseTimeoutAndOwnership() throws {
        let lock = try ProcessLock()
        #expect(try lock.acquire())
        expectError(.wouldDeadlock) { _ = try lock.acquire() }
        let other = try roundTrip(lock)  // as another process would open it
        #expect(try onAnotherThread { try other.acquire(blocking: false) } == false)
        #expect(try onAnotherThread { try other.acquire(timeout: 0.05) } == false)
        expectErrorAny(.notOwner) { try onAnotherThread { try other.release() } }
        try lock.release()
        expectErrorAny(.notOwner) { try lock.release() }
        #expect(try onAnotherThread { () throws -> Bool in
            let got = try other.acquireReportingDeath()
            try other.release()
            return got.acquired && !got.previousOwnerDied
        })
    }

    @Test func isLockedSaysWhetherAnyThreadHoldsIt() throws {
        let lock = try ProcessLock()
        let other = try roundTrip(lock)
        #expect(!lock.isLocked && !other.isLocked)
        #expect(try lock.acquire())
        #expect(lock.isLocked && other.isLocked)
        try lock.release()
        #expect(!other.isLocked)
        let rlock = try ProcessRLock()
        #expect(try rlock.acquire() && rlock.acquire())
        #expect(try roundTrip(rlock).isLocked)
        try rlock.release()
        #expect(rlock.isLocked, "still held once")
        try rlock.release()
        #expect(!rlock.isLocked)
    }

    @Test func descriptionsNameTheOwnerAsPythonsReprsDo() throws {
        let lock = try ProcessLock()
        #expect(lock.description == "<Lock(owner=None)>")
        try lock.acquire()
        #expect(lock.description == "<Lock(owner=\(Threading.Thread.current.name))>")
        #expect(try onAnotherThread { "\(try roundTrip(lock))" } == "<Lock(owner=SomeOtherThread)>")
        try lock.release()
        let rlock = try ProcessRLock()
        #expect(rlock.description == "<RLock(None, 0)>")
        try rlock.acquire()
        try rlock.acquire()
        #expect(rlock.description == "<RLock(\(Threading.Thread.current.name), 2)>")
        try rlock.release()
        try rlock.release()
    }

    @Test func rlockRecursionAndALocalConditionOverIt() throws {
        let rlock = try ProcessRLock()
        try rlock.acquire()
        try rlock.acquire()
        #expect(try rlock.isOwnedByCurrentThread())
        try rlock.release()
        #expect(try rlock.isOwnedByCurrentThread())
        try rlock.release()
        #expect(try !rlock.isOwnedByCurrentThread())
        // Threading.Condition works over it through the Locking protocol.
        let condition = Threading.Condition(lock: rlock)
        let flag = try SharedValue<Int>(0)
        let waiter = Threading.Thread(target: {
            _ = try condition.withLock { try condition.wait(for: { flag.value == 1 }, timeout: 20) }
        })
        try waiter.start()
        Threading.Thread.sleep(0.02)
        try condition.withLock {
            flag.value = 1
            try condition.notifyAll()
        }
        #expect(try waiter.join(timeout: 20))
    }

    @Test func semaphoresCountAndBoundedOnesRefuseTooManyReleases() throws {
        let semaphore = try ProcessSemaphore(value: 2, bounded: true)
        #expect(try semaphore.acquire() && semaphore.acquire())
        #expect(try semaphore.acquire(blocking: false) == false)
        #expect(try semaphore.acquire(timeout: 0.02) == false)
        let opened = try roundTrip(semaphore)
        let waited = Future<Bool>()
        let thread = Threading.Thread(target: { try waited.setResult(try opened.acquire(timeout: 20)) })
        try thread.start()
        try semaphore.release()
        #expect(try waited.result(timeout: 20))
        try semaphore.release(2)
        #expect(semaphore.value == 2)
        expectError(.invalidArgument) { try semaphore.release() }
        expectError(.invalidArgument) { try semaphore.release(0) }
        expectError(.invalidArgument) { _ = try ProcessSemaphore(value: -1) }
        let unbounded = try ProcessSemaphore(value: 0)
        try unbounded.release(5)
        #expect(unbounded.value == 5)
    }

    @Test func eventsWakeWaitersAndTimeOut() throws {
        let event = try ProcessEvent()
        #expect(!event.isSet && !event.wait(timeout: 0.02))
        let opened = try roundTrip(event)
        let seen = Future<Bool>()
        let thread = Threading.Thread(target: { try seen.setResult(opened.wait(timeout: 20)) })
        try thread.start()
        Threading.Thread.sleep(0.02)
        event.set()
        #expect(try seen.result(timeout: 20))
        #expect(event.isSet && event.wait())
        event.clear()
        #expect(!opened.isSet)
    }

    @Test func conditionsNotifyWaitTimeOutAndCheckOwnership() throws {
        let condition = try ProcessCondition()
        expectError(.notOwner) { _ = try condition.wait(timeout: 0.01) }
        expectError(.notOwner) { try condition.notify() }
        try condition.acquire()
        try condition.acquire()  // its RLock: recursion
        #expect(try condition.wait(timeout: 0.02) == false)  // times out, holds both levels again
        try condition.release()
        try condition.release()
        let opened = try roundTrip(condition)
        let ready = try SharedValue<Int>(0)
        let woke = Future<Bool>()
        let thread = Threading.Thread(target: {
            try woke.setResult(try opened.withLock { try opened.wait(for: { ready.value == 1 }, timeout: 20) })
        })
        try thread.start()
        Threading.Thread.sleep(0.02)
        try condition.withLock {
            ready.value = 1
            try condition.notifyAll()
        }
        #expect(try woke.result(timeout: 20))
        let onLock = try ProcessCondition(lock: try ProcessLock())
        try onLock.acquire()
        try onLock.notify(2)
        try onLock.release()
    }
}

@Suite struct ProcessBarrierTests {
    @Test func partiesMeetWithDistinctIndicesAndTheActionRunsOncePerRoundFirst() throws {
        let log = Outcomes()
        ProcessBarrier.registerAction("test-round") { log.append("action") }
        let barrier = try ProcessBarrier(parties: 3, action: "test-round")
        let opened = try roundTrip(barrier)  // as a child process would open it
        #expect(opened.parties == 3 && opened.action == "test-round")
        for round in 0..<2 {
            let indices = Outcomes()
            let threads = (0..<3).map { party in
                Threading.Thread {
                    let index = try (party == 0 ? barrier : opened).wait(timeout: 20)
                    log.append("passed")
                    indices.append("\(index)")
                }
            }
            for thread in threads { try thread.start() }
            for thread in threads { #expect(try thread.join(timeout: 20)) }
            #expect(Set(indices.values) == ["0", "1", "2"], "round \(round)")
        }
        #expect(log.values == ["action", "passed", "passed", "passed", "action", "passed", "passed", "passed"])
        #expect(!barrier.isBroken && barrier.nWaiting == 0)
    }

    @Test func aTimeoutAbortOrMissingActionBreaksTheBarrierUntilReset() throws {
        let barrier = try ProcessBarrier(parties: 2)
        #expect(throws: BrokenBarrierError.self) { try barrier.wait(timeout: 0.02) }
        #expect(barrier.isBroken)
        #expect(throws: BrokenBarrierError.self) { try barrier.wait() }
        barrier.reset()
        #expect(!barrier.isBroken)
        barrier.abort()
        #expect(throws: BrokenBarrierError.self) { try roundTrip(barrier).wait() }
        barrier.reset()

        // The last party's process has no such action: it gets a clear error, the others
        // a broken barrier.
        let unknown = try ProcessBarrier(parties: 1, action: "nobody-registered-this")
        expectErrorAny(.unknownEntryPoint) { _ = try unknown.wait() }
        #expect(unknown.isBroken)
        #expect(throws: MemoryMapError.self) { try ProcessBarrier(parties: 0) }
    }
}

@Suite struct SharedValueTests {
    @Test func valuesLocksAndAtomics() throws {
        let value = try SharedValue<Double>(1.5)
        #expect(value.value == 1.5)
        value.value = 2.5
        let opened = try roundTrip(value)
        #expect(opened.value == 2.5)
        let lock = try #require(value.getLock() as? ProcessRLock)
        try lock.withLock { value.unlockedValue += 1 }
        #expect(opened.value == 3.5)
        // The value's lock travels too, and is the same lock.
        let sameLock = try roundTrip(lock)
        try lock.acquire()
        #expect(try onAnotherThread { try sameLock.acquire(blocking: false) } == false)
        try lock.release()
        let counter = try SharedValue<Int64>(0, lock: false)
        #expect(counter.getLock() == nil)
        #expect(counter.add(5) == 5)
        #expect(counter.compareExchange(expected: 5, desired: 9))
        #expect(!counter.compareExchange(expected: 5, desired: 1))
        #expect(counter.value == 9)
    }

    @Test func valuesAndArraysCanShareAnExistingLock() throws {
        let shared = try ProcessLock()
        let balance = try SharedValue<Int>(100, lock: shared)
        let history = try SharedArray<Int>([0, 0], lock: shared)
        let openedBalance = try roundTrip(balance)  // finds the same lock by its recorded name
        let openedHistory = try roundTrip(history)
        #expect(balance.getLock() is ProcessLock && openedHistory.getLock() is ProcessLock)
        try shared.acquire()
        #expect(try onAnotherThread { try openedBalance.getLock()!.acquire(blocking: false, timeout: nil) } == false)
        #expect(try onAnotherThread { try openedHistory.getLock()!.acquire(blocking: false, timeout: nil) } == false)
        balance.unlockedValue -= 10
        try shared.release()
        #expect(openedBalance.value == 90)
        let rlock = try ProcessRLock()
        let guarded = try SharedValue<Int>(1, lock: rlock)
        try rlock.withLock { guarded.value += 1 }  // value's own accesses re-enter the RLock
        #expect(try roundTrip(guarded).value == 2)
    }

    @Test func arraysIndexCopyReplaceAndAdd() throws {
        let array = try SharedArray<Int32>([1, 2, 3])
        #expect(array.count == 3 && array.copy() == [1, 2, 3])
        try array.set(-1, 30)
        #expect(try array.get(2) == 30)
        expectError(.outOfRange) { _ = try array.get(3) }
        expectError(.outOfRange) { try array.set(-4, 0) }
        try array.replaceAll(with: [7, 8, 9])
        expectError(.outOfRange) { try array.replaceAll(with: [1]) }
        #expect(try array.add(5, at: 0) == 12)
        #expect(try array.compareExchange(at: 1, expected: 8, desired: 80))
        #expect(try !array.compareExchange(at: 1, expected: 8, desired: 800))
        try array.set(1, 8)
        let opened = try roundTrip(array)
        #expect(opened.copy() == [12, 8, 9])
        let zeros = try SharedArray<UInt8>(repeating: 0, count: 4, lock: false)
        #expect(zeros.copy() == [0, 0, 0, 0] && zeros.getLock() == nil)
        expectError(.invalidArgument) { _ = try SharedArray<UInt8>(repeating: 0, count: -1) }
    }
}

@Suite struct SharedMemoryQueueTests {
    @Test func bytesAndCodableValuesInOrderWithLimits() throws {
        let queue = try SharedMemoryQueue(capacity: 2, maxMessageSize: 16)
        try queue.put(bytes: [1, 2, 3])
        try queue.put("hi")
        #expect(queue.qsize == 2 && queue.isFull && !queue.isEmpty)
        expectError(.full) { try queue.put(bytes: [4], block: false) }
        expectError(.full) { try queue.put(bytes: [4], timeout: 0.02) }
        expectError(.messageTooLarge) { try queue.put(bytes: Array(repeating: 0, count: 17)) }
        #expect(try queue.getBytes() == [1, 2, 3])
        #expect(try queue.get(String.self) == "hi")
        expectError(.empty) { _ = try queue.getBytes(block: false) }
        expectError(.empty) { _ = try queue.getBytes(timeout: 0.02) }
        #expect(queue.join(timeout: 0.02) == false)  // two puts, no task_done yet
        try queue.taskDone()
        try queue.taskDone()
        #expect(queue.join(timeout: 1))
        expectError(.invalidArgument) { try queue.taskDone() }
        expectError(.invalidArgument) { _ = try SharedMemoryQueue(capacity: 0) }
        // A message of another type is an error for the reader, not a crash.
        try queue.put("text")
        #expect(throws: DecodingError.self) { _ = try queue.get(Int.self) }
        try queue.put(bytes: [0xc1])  // not MessagePack at all
        #expect(throws: (any Error).self) { _ = try queue.get(String.self) }
    }

    /// Python 3.13's queue shutdown (test_queue's shutdown tests), across processes: the
    /// flag lives in the shared memory, so a proxy opened by name sees it.
    @Test func shutdownRefusesPutsThenGetsOnceEmptyAndWakesBlockedCalls() throws {
        let queue = try SharedMemoryQueue(capacity: 2, maxMessageSize: 16)
        let elsewhere = try roundTrip(queue)
        try queue.put("a")
        #expect(!elsewhere.isShutDown)
        try elsewhere.shutdown()
        #expect(queue.isShutDown)
        expectError(.shutDown) { try queue.put("b") }
        #expect(try queue.get(String.self) == "a", "what was queued can still be taken")
        expectError(.shutDown) { _ = try queue.getBytes() }
        expectError(.shutDown) { _ = try queue.getBytes(block: false) }

        // A get blocked on an empty queue, and a put blocked on a full one, wake with shutDown.
        let empty = try SharedMemoryQueue(capacity: 1, maxMessageSize: 8)
        let full = try SharedMemoryQueue(capacity: 1, maxMessageSize: 8)
        try full.put(bytes: [1])
        let outcomes = Outcomes()
        let getter = Threading.Thread {
            do { _ = try empty.getBytes(timeout: 20) } catch let error as MemoryMapError { outcomes.append("get \(error.code)") }
        }
        let putter = Threading.Thread {
            do { try full.put(bytes: [2], timeout: 20) } catch let error as MemoryMapError { outcomes.append("put \(error.code)") }
        }
        try getter.start()
        try putter.start()
        Threading.Thread.sleep(0.05)
        try empty.shutdown()
        try full.shutdown()
        #expect(try getter.join(timeout: 20) && putter.join(timeout: 20))
        #expect(Set(outcomes.values) == ["get shutDown", "put shutDown"])
    }

    @Test func immediateShutdownDropsTheQueueAndReleasesJoin() throws {
        let queue = try SharedMemoryQueue(capacity: 4, maxMessageSize: 8)
        try queue.put(bytes: [1])
        try queue.put(bytes: [2])
        #expect(!queue.join(timeout: 0.01))
        try queue.shutdown(immediate: true)
        #expect(queue.qsize == 0)
        #expect(queue.join(timeout: 1), "the dropped messages count as done")
        expectError(.shutDown) { _ = try queue.getBytes() }
    }

    @Test func closeEndsThisProcessesUseOnly() throws {
        let queue = try SharedMemoryQueue(capacity: 2, maxMessageSize: 8)
        let elsewhere = try roundTrip(queue)
        queue.close()
        expectError(.closed) { try queue.put(bytes: [1]) }
        expectError(.closed) { _ = try queue.getBytes(block: false) }
        try elsewhere.put(bytes: [1])
        #expect(try elsewhere.getBytes() == [1])
    }

    @Test func manyThreadsThroughOneQueueDeliverEachMessageOnce() throws {
        let queue = try SharedMemoryQueue(capacity: 8, maxMessageSize: 8)
        let opened = try roundTrip(queue)
        let producers = (0..<3).map { p in
            Threading.Thread(target: {
                for i in 0..<500 { try opened.put(bytes: withUnsafeBytes(of: p * 1000 + i) { Array($0) }, timeout: 20) }
            })
        }
        for producer in producers { try producer.start() }
        var received: [Int] = []
        for _ in 0..<1500 { received.append(try queue.getBytes(timeout: 20).withUnsafeBytes { $0.load(as: Int.self) }) }
        for producer in producers { #expect(try producer.join(timeout: 20)) }
        #expect(Set(received).count == 1500)
        for p in 0..<3 {  // each producer's messages arrive in its order
            let mine = received.filter { $0 / 1000 == p }
            #expect(mine == mine.sorted())
        }
    }
}

func expectErrorAny(_ code: MemoryMapError.Code, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    expectError(code, body, sourceLocation: sourceLocation)
}

/// Lines recorded from several threads.
final class Outcomes: @unchecked Sendable {
    private let lock = Threading.Lock()
    private var lines: [String] = []
    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var values: [String] { lock.withLock { lines } }
}
