import Colony
import Foundation
import Testing

/// The manager's blocking objects through the real `colony manager` process.
@Suite(.serialized) struct BlockingObjectsIntegrationTests {
    @Test func queueMethodsTimeoutsAndErrors() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let queue = try await manager.joinableQueue("jobs", Int.self, maxsize: 2)
        try await queue.put(1)
        try await queue.putNowait(2)
        #expect(try await queue.isFull())
        #expect(try await queue.qsize() == 2)
        await #expect(throws: QueueFull.self) { try await queue.putNowait(3) }
        await #expect(throws: QueueFull.self) { try await queue.put(3, timeout: 0.05) }
        #expect(try await queue.get() == 1)
        #expect(try await queue.get(upTo: 10) == [2])
        await #expect(throws: QueueEmpty.self) { try await queue.getNowait() }
        await #expect(throws: QueueEmpty.self) { try await queue.get(timeout: 0.05) }
        #expect(try await queue.join(timeout: 0.05) == false)
        try await queue.taskDone()
        try await queue.taskDone()
        #expect(try await queue.join(timeout: 1))
        await #expect(throws: RemoteError.self) { try await queue.taskDone() }
        try await queue.put(contentsOf: [7, 8])
        #expect(try await queue.isEmpty() == false)

        let priority = try await manager.priorityQueue(nil, [Int].self)
        try await priority.put(contentsOf: [[3, 0], [1, 1], [2, 2]])
        #expect(try await priority.get(upTo: 3) == [[1, 1], [2, 2], [3, 0]])
        let lifo = try await manager.lifoQueue(nil, String.self)
        try await lifo.put(contentsOf: ["a", "b"])
        #expect(try await lifo.get() == "b")

        // A parked get from a plain thread is answered by a put from another connection.
        let other = try await server.connect()
        let shared = try await other.queue("handoff", String.self)
        let mine = try await manager.queue("handoff", String.self)
        let received = Future<String>()
        let thread = Thread(target: {
            do { try received.setResult(try mine.get(timeout: 20)) } catch { try? received.setException(error) }
        })
        try thread.start()
        #expect(try await eventually { try await waitingOn(manager, "handoff") == 1 })
        try await shared.put("hello")
        #expect(try received.result(timeout: 20) == "hello")
        _ = try thread.join()
        try await shared.shutdown()
        await #expect(throws: QueueShutDown.self) { try await mine.get() }
        await manager.close()
        await other.close()
    }

    @Test func manyProducersAndConsumersDeliverEveryItemOnce() async throws {
        let server = try ManagerProcess()
        let producers = 4, consumers = 4, perProducer = 400
        let total = producers * perProducer
        let results = try await withThrowingTaskGroup(of: [Int].self) { group in
            for p in 0..<producers {
                group.addTask {
                    let manager = try await server.connect()
                    let queue = try await manager.queue("work", Int.self, maxsize: 64)
                    for i in 0..<perProducer {
                        if i % 50 == 0 {
                            try await queue.put(contentsOf: Array(p * perProducer + i..<p * perProducer + i + 50))
                        }
                    }
                    await manager.close()
                    return []
                }
            }
            for _ in 0..<consumers {
                group.addTask {
                    let manager = try await server.connect()
                    let queue = try await manager.queue("work", Int.self, maxsize: 64)
                    let done = try await manager.dict("done", String.self, Int.self)
                    var got: [Int] = []
                    while true {
                        let batch: [Int]
                        do {
                            batch = try await queue.get(upTo: 7, timeout: 30)
                        } catch is QueueShutDown {
                            break  // another consumer saw the last item
                        }
                        got += batch
                        if try await done.increment("count", by: batch.count) == total { try await queue.shutdown() }
                    }
                    await manager.close()
                    return got
                }
            }
            var all: [Int] = []
            for try await part in group { all += part }
            return all
        }
        #expect(results.count == total)
        #expect(Set(results) == Set(0..<total))
    }

    @Test func locksSemaphoresConditionsEventsAndBarriersAcrossClients() async throws {
        let server = try ManagerProcess()
        let a = try await server.connect()
        let b = try await server.connect()
        let lockA = try await a.lock("L")
        let lockB = try await b.lock("L")
        let first = try await lockA.acquireGrant()
        #expect(first.acquired && !first.previousOwnerDied)
        #expect(try await lockB.acquire(blocking: false) == false)
        #expect(try await lockB.acquire(timeout: 0.05) == false)
        async let waited = lockB.acquireGrant(timeout: 20)
        #expect(try await eventually { try await waitingOn(a, "L") == 1 })
        try await lockA.release()
        let second = try await waited
        #expect(second.acquired && second.fencingToken > first.fencingToken)
        #expect(try await lockA.locked())
        try await lockA.release()  // a Lock may be released by anyone, as in Python

        let rlock = try await a.rlock("R")
        try await rlock.acquire()
        try await rlock.acquire()
        await #expect(throws: RemoteError.self) { try await b.rlock("R").release() }
        try await rlock.release()
        try await rlock.release()
        await #expect(throws: RemoteError.self) { try await rlock.release() }

        // A local Condition over a remote RLock (the Locking protocol), from plain threads.
        let local = Condition(lock: try await a.rlock("for-condition"))
        let flag = try await a.value("flag", typecode: "i", 0)
        let waiter = Thread(target: {
            _ = try local.withLock { try local.wait(for: { try flag.get() == 1 }, timeout: 20) }
        })
        try waiter.start()
        let notifier = Thread(target: {
            Thread.sleep(0.05)
            try local.withLock {
                try flag.set(1)
                try local.notifyAll()
            }
        })
        try notifier.start()
        #expect(try waiter.join(timeout: 20))
        #expect(try notifier.join(timeout: 20))

        let semaphore = try await a.boundedSemaphore("S", value: 2)
        #expect(try await semaphore.acquire())
        #expect(try await semaphore.acquire())
        #expect(try await semaphore.acquire(blocking: false) == false)
        #expect(try await semaphore.acquire(timeout: 0.05) == false)
        try await semaphore.release(2)
        await #expect(throws: RemoteError.self) { try await semaphore.release() }
        #expect(try await semaphore.value() == 2)

        let condition = try await a.condition("C")
        let conditionB = try await b.condition("C")
        let items = try await a.list("items", Int.self)
        async let consumed: Bool = conditionB.withLock {
            try await conditionB.wait(for: { try await b.list("items", Int.self).count() > 0 }, timeout: 20)
        }
        #expect(try await eventually { try await waitingOn(a, "C") == 1 })
        try await condition.withLock {
            try await items.append(1)
            try await condition.notify()
        }
        #expect(try await consumed)
        try await condition.acquire()
        #expect(try await condition.wait(timeout: 0.05) == false)
        try await condition.release()
        await #expect(throws: RemoteError.self) { try await condition.notify() }

        let event = try await a.event("E")
        async let seen = b.event("E").wait(timeout: 20)
        #expect(try await eventually { try await waitingOn(a, "E") == 1 })
        try await event.set()
        #expect(try await seen)
        #expect(try await event.isSet())
        try await event.clear()
        #expect(try await event.wait(timeout: 0.05) == false)

        // The action runs in the client that created the barrier, also when another client,
        // which knows nothing of it, completes the round.
        let ranIn = Recorder<String>()
        let barrierA = try await a.barrier("B", parties: 2, action: { ranIn.append("a") })
        let barrierB = try await b.barrier("B", parties: 2)
        async let indexA = barrierA.wait(timeout: 20)
        #expect(try await eventually { try await waitingOn(a, "B") == 1 })
        let indexB = try await Task.detached { try barrierB.wait(timeout: 20) }.value  // the last: index 0
        let firstIndex = try await indexA
        #expect(indexB == 0 && firstIndex == 1)
        #expect(ranIn.values == ["a"])
        #expect(try await barrierA.parties() == 2)
        #expect(try await barrierA.nWaiting() == 0)
        await #expect(throws: BrokenBarrierError.self) { try await barrierA.wait(timeout: 0.05) }
        #expect(try await barrierA.isBroken())
        try await barrierA.reset()
        try await barrierA.abort()
        #expect(try await barrierB.isBroken())

        // A failing action breaks the round for every party, saying why.
        let failing = try await a.barrier("F", parties: 1, action: { throw ActionFailed() })
        do {
            _ = try await b.barrier("F", parties: 1).wait(timeout: 20)
            Issue.record("a round whose action failed went on")
        } catch let error as BrokenBarrierError {
            #expect(error.reason.contains("action failed"))
        }
        #expect(try await failing.isBroken())

        let guarded = try await a.value("guarded", typecode: "i", 0)
        let guardLock = try await guarded.getLock()
        #expect(guardLock.isReentrant)
        #expect(try await guardLock.acquire())
        await a.close()
        await b.close()
    }

    @Test func waitersAreServedFirstComeFirstServed() async throws {
        let server = try ManagerProcess()
        let holder = try await server.connect()
        let lock = try await holder.lock("fair")
        try await lock.acquire()
        let order = try await holder.list("order", Int.self)
        var clients: [Manager] = []
        var tasks: [Task<Void, any Error>] = []
        for index in 0..<5 {
            let client = try await server.connect()
            clients.append(client)
            let theirs = try await client.lock("fair")
            let log = try await client.list("order", Int.self)
            tasks.append(Task {
                try await theirs.acquire()
                try await log.append(index)
                try await theirs.release()
            })
            // The next one asks only once this one is queued.
            #expect(try await eventually { try await waitingOn(holder, "fair") == index + 1 })
        }
        try await lock.release()
        for task in tasks { try await task.value }
        #expect(try await order.copy() == [0, 1, 2, 3, 4])
        for client in clients { await client.close() }
        await holder.close()
    }

    @Test func cancellingAnAsyncWaitCancelsItOnTheManager() async throws {
        let server = try ManagerProcess()
        let manager = try await server.connect()
        let queue = try await manager.queue("q", Int.self)
        let task = Task { try await queue.get() }
        #expect(try await eventually { try await waitingOn(manager, "q") == 1 })
        task.cancel()
        await #expect(throws: CancelledError.self) { try await task.value }
        #expect(try await waitingOn(manager, "q") == 0)
        try await queue.put(1)
        #expect(try await queue.qsize() == 1)  // nobody took it
        await manager.close()
    }

    @Test func aKilledClientGivesBackLocksPermitsAndPlacesAndTheNextHolderIsTold() async throws {
        let server = try ManagerProcess()
        let holder = try HolderProcess(server: server)
        defer { holder.reap() }
        try await holder.waitUntilReady()
        let manager = try await server.connect()
        let barrier = try await manager.barrier("B", parties: 3)
        let broken = Task { try await barrier.wait(timeout: 30) }
        #expect(try await eventually { try await waitingOn(manager, "B") == 2 })
        holder.kill()

        let lock = try await manager.lock("L")
        let grant = try await lock.acquireGrant(timeout: 20)
        #expect(grant.acquired && grant.previousOwnerDied)
        let rlock = try await manager.rlock("R")
        let rgrant = try await rlock.acquireGrant(timeout: 20)
        #expect(rgrant.acquired && rgrant.previousOwnerDied)
        let semaphore = try await manager.semaphore("S", value: 2)
        #expect(try await semaphore.acquireGrant(timeout: 20).previousOwnerDied)
        #expect(try await semaphore.acquire(timeout: 20))
        await #expect(throws: BrokenBarrierError.self) { try await broken.value }
        // The dead client's parked get took nothing with it.
        let queue = try await manager.queue("Q", String.self)
        try await queue.put("survives")
        #expect(try await queue.get(timeout: 20) == "survives")
        await manager.close()
    }

    @Test func proxiesTravelInsideSharedObjectsAndArriveLive() async throws {
        let server = try ManagerProcess()
        let a = try await server.connect()
        let b = try await server.connect()
        // A list proxy stored in a dict, a dict proxy and a lock proxy put on a queue.
        let index = try await a.dict("index", String.self, ListProxy<String>.self)
        let mailbox = try await a.queue("mailbox", DictProxy<String, Int>.self)
        let locks = try await a.queue("locks", LockProxy.self)
        do {
            let log = try await a.list(nil, String.self)  // anonymous: alive while referenced
            try await log.append("from a")
            try await index.set("log", log)
            let scores = try await a.dict(nil, String.self, Int.self)
            try await mailbox.put(scores)
            try await locks.put(try await a.lock())
        }
        let received = try await b.dict("index", String.self, ListProxy<String>.self).get("log")
        try await received.append("from b")
        let scores = try await b.queue("mailbox", DictProxy<String, Int>.self).get(timeout: 10)
        try await scores.set("b", 2)
        let lock = try await b.queue("locks", LockProxy.self).get(timeout: 10)
        #expect(try await lock.acquire(blocking: false))
        await a.close()  // the objects live on through the references b holds
        #expect(try await received.copy() == ["from a", "from b"])
        #expect(try await scores.copy() == ["b": 2])
        #expect(try await lock.locked())
        // A bare reference without a manager does not pretend to be a proxy.
        #expect(throws: DecodingError.self) {
            _ = try WireValueDecoder().decode(ListProxy<String>.self, from: .objectRef(received.reference))
        }
        await b.close()
    }

    @Test func readingAProxyAgainAndAgainPinsNothingAndTheLastProxyFreesIt() async throws {
        let server = try ManagerProcess()
        let client = try await server.connect()
        let observer = try await server.connect()
        let outer = try await client.dict(nil, String.self, DictProxy<String, Int>.self)
        var innerID: UInt64 = 0
        do {
            let inner = try await client.dict(nil, String.self, Int.self)
            innerID = inner.reference.id
            try await outer.set("k", inner)
        }
        func references() async throws -> Int64? {
            let objects = try await observer.status()["objects"]?.arrayValue ?? []
            return objects.first { $0["id"]?.uint64Value == innerID }?["refs"]?.int64Value
        }
        // Read as bare references, which no proxy releases (the session keeps its hold until
        // it ends or makes a proxy of each): still one reference for the session.
        let reader = try await server.connect()
        let bare = try reader.dict(outer.reference, String.self, ObjectRef.self)
        for _ in 0..<100 { #expect(try await bare.get("k").id == innerID) }
        #expect(try await references() == 2, "the dict's reference and the reading session's one")
        await reader.close()
        #expect(try await eventually { try await references() == 1 })
        // Proxies made and dropped while others arrive, from many tasks at once: each one
        // works (no release overtakes an answer on its way), and the manager holds one
        // reference for the session however many were read.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for round in 0..<50 { try await outer.get("k").set("t\(task)", round) }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await references() ?? 0 <= 2, "the dict's reference and at most the session's one")
        #expect(try await outer.get("k").count() == 8)
        // Out of the dict and out of every proxy: freed.
        _ = try await outer.pop("k")
        #expect(try await eventually { try await references() == nil }, "the last proxy's release freed it")
        await client.close()
        await observer.close()
    }

    @Test func theManagerFreesAnonymousObjectsThatOnlyReferenceEachOther() async throws {
        let server = try ManagerProcess(extraArguments: ["--collect-cycles", "0.2"])
        let client = try await server.connect()
        let observer = try await server.connect()
        do {
            let list = try await client.list(nil, DictProxy<String, ListProxy<Int>>.self)
            let dict = try await client.dict(nil, String.self, ListProxy<Int>.self)
            try await dict.set("back", try client.list(list.reference, Int.self))
            try await list.append(dict)
        }  // the proxies go: only the cycle keeps the two alive
        let freed = { try await observer.status()["counters"]?["cycles_freed"]?.int64Value ?? 0 }
        #expect(try await eventually { try await freed() == 2 })
        #expect(try await observer.status()["objects"]?.arrayValue?.count == 0)
        await client.close()
        await observer.close()
    }

    @Test func theChaptersMakeDictPassesADictProxyToChildProcesses() async throws {
        let server = try ManagerProcess()
        let program = Process()
        program.executableURL = buildDirectory.appendingPathComponent("colony-examples")
        program.arguments = ["make-dict", String(server.port), server.stateDirectory]
        let output = Pipe()
        program.standardOutput = output
        try program.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        program.waitUntilExit()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(program.terminationStatus == 0)
        #expect(lines.last == "alpha: alphaalpha, beta: betabeta, delta: deltadelta, gamma: gammagamma")
        // Each string was handled in a process of its own.
        let pids = Set(lines.dropLast().compactMap { $0.split(separator: " ").first })
        #expect(pids.count == 4)
        // The children's sessions are gone and the anonymous dict went with the last one.
        let observer = try await server.connect()
        #expect(try await eventually { try await observer.status()["objects"]?.arrayValue?.count == 0 })
        await observer.close()
    }

    @Test func aFrozenClientIsFoundDeadByKeepaliveAndReleased() async throws {
        let server = try ManagerProcess(extraArguments: ["--keepalive", "0.3"])
        let holder = try HolderProcess(server: server)
        defer { holder.reap() }
        try await holder.waitUntilReady()
        holder.signal(SIGSTOP)  // its connection stays open but it never answers a ping
        let manager = try await server.connect()
        let grant = try await manager.lock("L").acquireGrant(timeout: 20)
        #expect(grant.acquired && grant.previousOwnerDied)
        await manager.close()
    }
}

/// The number of calls parked on the named object.
func waitingOn(_ manager: Manager, _ name: String) async throws -> Int {
    let objects = try await manager.status()["objects"]?.arrayValue ?? []
    return objects.first { $0["name"] == .string(name) }?["waiting"]?.int64Value.map(Int.init) ?? -1
}

/// `colony-examples manager-hold-locks`: a client that takes locks, parks calls and waits.
final class HolderProcess: @unchecked Sendable {
    let process = Process()
    let readyFile: String

    init(server: ManagerProcess) throws {
        readyFile = server.stateDirectory + "/holder-\(UUID().uuidString)"
        process.executableURL = buildDirectory.appendingPathComponent("colony-examples")
        process.arguments = ["manager-hold-locks", String(server.port), server.stateDirectory, readyFile]
        try process.run()
    }

    func waitUntilReady() async throws {
        let ready = await eventually(30) { FileManager.default.fileExists(atPath: readyFile) }
        try #require(ready, "the holder never took its locks")
    }

    func signal(_ number: Int32) { Foundation.kill(process.processIdentifier, number) }

    func kill() {
        signal(SIGKILL)
        process.waitUntilExit()
    }

    func reap() {
        if process.isRunning { signal(SIGKILL) }
        process.waitUntilExit()
    }
}

struct ActionFailed: Error {}

/// Values recorded from any thread.
final class Recorder<Element: Sendable>: @unchecked Sendable {
    private let lock = Threading.Lock()
    private var elements: [Element] = []
    func append(_ element: Element) { lock.withLock { elements.append(element) } }
    var values: [Element] { lock.withLock { elements } }
}

@Suite(.serialized) struct BarrierActionTests {
    /// Code does not travel: once the client that created a barrier with an action is gone,
    /// a round that fills breaks, instead of going on without its action.
    @Test func aRoundBreaksOnceTheCreatorOfItsActionIsGone() async throws {
        let server = try ManagerProcess()
        let creator = try await server.connect()
        let (b, c) = (try await server.connect(), try await server.connect())
        _ = try await creator.barrier("G", parties: 2, action: {})
        await creator.close()
        let barrierB = try await b.barrier("G", parties: 2)
        let barrierC = try await c.barrier("G", parties: 2)
        let first = Task { try await barrierB.wait(timeout: 20) }
        #expect(try await eventually { try await barrierC.nWaiting() == 1 })
        do {
            _ = try await barrierC.wait(timeout: 20)
            Issue.record("a round went on without its action")
        } catch let error as BrokenBarrierError {
            #expect(error.reason.contains("created it"))
        }
        await #expect(throws: BrokenBarrierError.self) { _ = try await first.value }
        await b.close()
        await c.close()
    }
}
