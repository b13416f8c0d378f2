import ColonyWire
import Testing
import Threading

@testable import ColonyServer

/// Collects parked calls' answers as the NIO shell's outlet would enqueue them.
final class RecordingOutlet: AnswerOutlet, @unchecked Sendable {
    private let lock = Lock()
    private var delivered: [(UInt64, Result<WireValue, RemoteError>)] = []

    func deliver(requestID: UInt64, _ outcome: Result<WireValue, RemoteError>) {
        lock.withLock { delivered.append((requestID, outcome)) }
    }

    func take() -> [(UInt64, Result<WireValue, RemoteError>)] {
        lock.withLock {
            defer { delivered = [] }
            return delivered
        }
    }
}

/// One client session driven without a socket: requests in, answers (immediate or parked)
/// recorded by request id.
final class TestClient {
    var session: ManagerSession
    let outlet = RecordingOutlet()
    private var answers: [UInt64: Result<WireValue, RemoteError>] = [:]
    private var nextID: UInt64 = 1
    private(set) var timeouts: Set<UInt64> = []

    init(_ context: TestContext, id: UInt64, maxInFlight: Int = 64, meter: RequestMeter? = nil) throws {
        let key = Array(repeating: UInt8(5), count: 32)
        let configuration = HandshakeConfiguration(authKey: try AuthKey(key), failureDelayNanoseconds: 0)
        session = ManagerSession(
            id: id, context: context, handshake: configuration, maxFrameBody: 1 << 20, maxMessageSize: 1 << 20,
            maxInFlight: maxInFlight, outlet: outlet, meter: meter, now: 0)
        var client = ClientHandshake(configuration: configuration)
        var toServer = [client.start(now: 0)]
        while let frame = toServer.popLast() {
            for action in session.receive(frame, now: 1) {
                guard case .send(let reply) = action else { continue }
                if case .send(let frames) = client.receive(reply, now: 1) { toServer += frames }
            }
        }
    }

    private func record(_ actions: [SessionAction]) throws {
        for action in actions {
            switch action {
            case .send(let frame):
                var assembler = MessageAssembler()
                guard let message = try assembler.receive(frame) else { continue }
                switch message.kind {
                case .response: answers[message.requestID] = .success(try message.value())
                case .error: answers[message.requestID] = .failure(try RemoteError(wireValue: message.value()))
                default: break
                }
            case .answer(let requestID, let result):
                answers[requestID] = result
            case .answerEncoded(let requestID, let body):
                answers[requestID] = .success(try WireValue(messagePack: body.readableBytesView))
            case .scheduleTimeout(let requestID, _):
                timeouts.insert(requestID)
            default:
                break
            }
        }
    }

    /// Sends a request; returns its id.
    @discardableResult
    func send(_ request: Request) throws -> UInt64 {
        let id = nextID
        nextID += 1
        try send(request, id: id)
        return id
    }

    /// Sends a request under a request id of the caller's choosing.
    func send(_ request: Request, id: UInt64) throws {
        try record(session.receive(Message(kind: .request, requestID: id, body: request.wireValue.encoded()).frames(maxBodySize: 1 << 20)[0], now: 2))
    }

    func send(_ object: UInt64, _ method: String, _ arguments: WireValue...) throws -> UInt64 {
        try send(.call(object: object, method: method, arguments: arguments))
    }

    /// Hands delivered answers to the session, as the shell does on its event loop.
    func pump() throws {
        for (id, outcome) in outlet.take() { try record(session.parkedAnswered(requestID: id, outcome)) }
    }

    /// The answer of request `id`, if it has one yet.
    func answer(_ id: UInt64) throws -> Result<WireValue, RemoteError>? {
        try pump()
        return answers[id]
    }

    /// Sends and expects an answer at once.
    func call(_ object: UInt64, _ method: String, _ arguments: WireValue...) throws -> WireValue {
        let id = try send(.call(object: object, method: method, arguments: arguments))
        return try #require(try answer(id)).get()
    }

    func error(_ id: UInt64) throws -> ErrorCode? {
        guard case .failure(let error)? = try answer(id) else { return nil }
        return error.code
    }

    func new(_ type: ObjectType, _ options: WireValue = .null, name: String? = nil) throws -> UInt64 {
        let id = try send(.new(type: type, name: name, options: options))
        return try #require(try answer(id)?.get().objectRefValue).id
    }

    func cancel(_ id: UInt64) throws { try record(session.receive(Frame(kind: .cancel, requestID: id), now: 3)) }
    func expire(_ id: UInt64) throws {
        session.expire(requestID: id)
        try pump()
    }
}

func grantOf(_ value: WireValue) throws -> LockGrant { try LockGrant.decode(value) }

@Suite struct QueueObjectTests {
    @Test func parkedGetIsAnsweredByALaterPutInArrivalOrder() throws {
        let context = TestContext()
        let (a, b, c) = (try TestClient(context, id: 1), try TestClient(context, id: 2), try TestClient(context, id: 3))
        let queue = try a.new(.queue)
        let first = try b.send(queue, "get")
        let second = try c.send(queue, "get")
        #expect(try b.answer(first) == nil)
        _ = try a.call(queue, "put", "x")
        _ = try a.call(queue, "put", "y")
        #expect(try b.answer(first) == .success("x"))
        #expect(try c.answer(second) == .success("y"))
        #expect(try a.call(queue, "qsize") == 0)
    }

    @Test func nowaitAndTimeoutsGiveEmptyAndFull() throws {
        let context = TestContext()
        let a = try TestClient(context, id: 1)
        let queue = try a.new(.queue, ["maxsize": 1])
        #expect(try a.error(a.send(queue, "get", false)) == .empty)
        #expect(try a.error(a.send(queue, "get", true, 0.0)) == .empty)
        _ = try a.call(queue, "put", 1)
        #expect(try a.call(queue, "full") == true)
        #expect(try a.error(a.send(queue, "put", 2, false)) == .full)
        let parked = try a.send(queue, "put", 2, true, 0.5)
        #expect(a.timeouts.contains(parked))
        try a.expire(parked)
        #expect(try a.error(parked) == .full)
        #expect(try a.error(a.send(queue, "get", true, -1.0)) == .valueError)
    }

    @Test func boundedPutParksUntilAGetMakesRoom() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let queue = try a.new(.queue, ["maxsize": 1])
        _ = try a.call(queue, "put", 1)
        let put = try b.send(queue, "put", 2)
        #expect(try b.answer(put) == nil)
        #expect(try a.call(queue, "get") == 1)
        #expect(try b.answer(put) == .success(.null))
        #expect(try a.call(queue, "get") == 2)
    }

    @Test func lifoPriorityBatchesAndJoin() throws {
        let context = TestContext()
        let a = try TestClient(context, id: 1)
        let lifo = try a.new(.lifoQueue)
        _ = try a.call(lifo, "put_many", [1, 2, 3])
        #expect(try a.call(lifo, "get_many", 10) == [3, 2, 1])
        let priority = try a.new(.priorityQueue)
        _ = try a.call(priority, "put_many", [5, 1, 3, 1.5])
        #expect(try a.call(priority, "get_many", 3) == [1, 1.5, 3])
        #expect(try a.error(a.send(priority, "put", "text")) == .wrongType)  // Python: TypeError
        #expect(try a.call(priority, "qsize") == 1)
        let joinable = try a.new(.joinableQueue)
        _ = try a.call(joinable, "put_many", [1, 2])
        let join = try a.send(joinable, "join")
        #expect(try a.answer(join) == nil)
        _ = try a.call(joinable, "get_many", 2)
        _ = try a.call(joinable, "task_done")
        #expect(try a.answer(join) == nil)
        _ = try a.call(joinable, "task_done")
        #expect(try a.answer(join) == .success(true))
        #expect(try a.error(a.send(joinable, "task_done")) == .valueError)
    }

    @Test func cancelledGetLosesNoItemAndShutdownWakesEveryone() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let queue = try a.new(.queue)
        let get = try b.send(queue, "get")
        try b.cancel(get)
        #expect(try b.error(get) == .cancelled)
        _ = try a.call(queue, "put", "kept")
        #expect(try a.call(queue, "qsize") == 1)
        #expect(try a.call(queue, "get") == "kept")
        let waiting = try b.send(queue, "get")
        _ = try a.call(queue, "shutdown")
        #expect(try b.error(waiting) == .shutDown)
        #expect(try a.error(a.send(queue, "put", 1)) == .shutDown)
    }

    @Test func immediateShutdownDropsItemsAndReleasesJoiners() throws {
        let context = TestContext()
        let a = try TestClient(context, id: 1)
        let queue = try a.new(.joinableQueue, ["maxsize": 2])
        _ = try a.call(queue, "put_many", [1, 2])
        let join = try a.send(queue, "join")
        let put = try a.send(queue, "put", 3)
        _ = try a.call(queue, "shutdown", true)
        #expect(try a.answer(join) == .success(true))
        #expect(try a.error(put) == .shutDown)
        #expect(try a.call(queue, "qsize") == 0)
        #expect(try a.error(a.send(queue, "get")) == .shutDown)
    }

    @Test func aSessionThatEndsWhileParkedLosesNoItem() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let queue = try a.new(.queue, name: "jobs")
        _ = try b.new(.queue, name: "jobs")
        let get = try b.send(queue, "get")
        b.session.end()
        _ = try a.call(queue, "put", "job")
        #expect(try b.answer(get) == nil)
        #expect(try a.call(queue, "get") == "job")
    }

    @Test func batchesRefuseCallsThatWouldBlock() throws {
        let context = TestContext()
        let a = try TestClient(context, id: 1)
        let queue = try a.new(.queue)
        let answer = try a.call(queue, "qsize")
        #expect(answer == 0)
        let batch = try a.send(.batch([.call(object: queue, method: "get", arguments: []), .call(object: queue, method: "get", arguments: [false])]))
        let outcomes = try #require(try a.answer(batch)?.get().arrayValue)
        #expect(try BatchOutcome(wireValue: outcomes[0]).errorCode == .badRequest)
        #expect(try BatchOutcome(wireValue: outcomes[1]).errorCode == .empty)
    }

    @Test func maxInFlightBoundsParkedCalls() throws {
        let context = TestContext()
        let a = try TestClient(context, id: 1, maxInFlight: 2)
        let queue = try a.new(.queue)
        _ = try a.send(queue, "get")
        _ = try a.send(queue, "get")
        #expect(try a.error(a.send(queue, "get")) == .limitExceeded)
    }
}

extension BatchOutcome {
    var errorCode: ErrorCode? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}

@Suite struct LockObjectTests {
    @Test func waitersAreGrantedInArrivalOrderWithRisingTokens() throws {
        let context = TestContext()
        let clients = try (1...4).map { try TestClient(context, id: UInt64($0)) }
        let lock = try clients[0].new(.lock, name: "L")
        for client in clients.dropFirst() { _ = try client.new(.lock, name: "L") }
        let first = try grantOf(clients[0].call(lock, "acquire", 7))
        #expect(first.acquired && !first.previousOwnerDied)
        let waits = try clients.dropFirst().map { try $0.send(lock, "acquire", 1) }
        var tokens = [first.fencingToken]
        var holder = clients[0]
        for (client, request) in zip(clients.dropFirst(), waits) {
            #expect(try client.answer(request) == nil)
            _ = try holder.call(lock, "release", holder === clients[0] ? 7 : 1)
            let granted = try grantOf(try #require(try client.answer(request)).get())
            #expect(granted.acquired)
            tokens.append(granted.fencingToken)
            holder = client
        }
        #expect(tokens == tokens.sorted() && Set(tokens).count == 4)
        #expect(try clients[0].call(lock, "locked") == true)
    }

    @Test func nonBlockingAndTimedOutAcquiresAreRefused() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let lock = try a.new(.lock, name: "L")
        _ = try b.new(.lock, name: "L")
        _ = try a.call(lock, "acquire", 1)
        #expect(try grantOf(b.call(lock, "acquire", 1, false)).acquired == false)
        let timed = try b.send(lock, "acquire", 1, true, 0.2)
        try b.expire(timed)
        #expect(try grantOf(try #require(try b.answer(timed)).get()).acquired == false)
        // A Lock may be released by anyone (Python's Lock); releasing it unlocked is an error.
        _ = try b.call(lock, "release", 9)
        #expect(try b.error(b.send(lock, "release", 9)) == .notOwner)
        // As in Python, a non-blocking acquire takes no timeout (locks and semaphores alike).
        #expect(try b.error(b.send(lock, "acquire", 1, false, 1.0)) == .valueError)
        let semaphore = try a.new(.semaphore)
        #expect(try a.error(a.send(semaphore, "acquire", 1, false, 0.5)) == .valueError)
        #expect(try grantOf(a.call(semaphore, "acquire", 1, false, nil)).acquired)
    }

    @Test func aDeadHolderReleasesEverythingAndTheNextHolderIsTold() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let rlock = try a.new(.rlock, name: "R")
        _ = try b.new(.rlock, name: "R")
        _ = try a.call(rlock, "acquire", 1)
        _ = try a.call(rlock, "acquire", 1)  // twice: recursion
        #expect(try b.error(b.send(rlock, "release", 1)) == .notOwner)
        let waiting = try b.send(rlock, "acquire", 1)
        a.session.end()
        let granted = try grantOf(try #require(try b.answer(waiting)).get())
        #expect(granted.acquired && granted.previousOwnerDied)
        _ = try b.call(rlock, "release", 1)
        #expect(try grantOf(b.call(rlock, "acquire", 1)).previousOwnerDied == false)
    }

    @Test func aGoodbyeReleasesHeldLocksAsADeathDoes() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let lock = try a.new(.lock, name: "L")
        _ = try b.new(.lock, name: "L")
        _ = try a.call(lock, "acquire", 1)
        let waiting = try b.send(lock, "acquire", 1)
        #expect(a.session.receive(Frame(kind: .goodbye), now: 2).contains(.close))
        a.session.end()
        let granted = try grantOf(try #require(try b.answer(waiting)).get())
        #expect(granted.acquired && granted.previousOwnerDied, "the next holder is told, as after a crash")
    }

    @Test func semaphoresCountPermitsAndGiveBackADeadSessionsPermits() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let semaphore = try a.new(.boundedSemaphore, ["value": 2], name: "S")
        _ = try b.new(.boundedSemaphore, ["value": 2], name: "S")
        _ = try a.call(semaphore, "acquire", 1)
        _ = try a.call(semaphore, "acquire", 1)
        #expect(try a.call(semaphore, "value") == 0)
        let waiting = try b.send(semaphore, "acquire", 1)
        a.session.end()
        #expect(try grantOf(try #require(try b.answer(waiting)).get()).previousOwnerDied)
        #expect(try b.call(semaphore, "value") == 1)
        _ = try b.call(semaphore, "release", 1)
        #expect(try b.error(b.send(semaphore, "release", 1)) == .valueError)  // above the bound
    }

    @Test func conditionWaitReleasesTheLockAndNotifiedWaitersTakeItBack() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let lock = try a.new(.lock, name: "L")
        let condition = try a.new(.condition, ["lock": .objectRef(ObjectRef(type: .lock, id: lock))], name: "C")
        _ = try b.new(.condition, name: "C")
        #expect(try b.error(b.send(condition, "wait", 1)) == .notOwner)
        _ = try b.call(condition, "acquire", 1)
        let wait = try b.send(condition, "wait", 1)
        #expect(try b.answer(wait) == nil)
        #expect(try a.call(lock, "locked") == false)  // the wait gave the shared lock up
        _ = try a.call(condition, "acquire", 2)
        _ = try a.call(condition, "notify", 2)
        #expect(try b.answer(wait) == nil)  // notified, but a still holds the lock
        _ = try a.call(condition, "release", 2)
        #expect(try b.answer(wait) == .success(true))
        let timed = try b.send(condition, "wait", 1, 0.1)
        try b.expire(timed)
        #expect(try b.answer(timed) == .success(false))
        _ = try b.call(condition, "release", 1)
        #expect(try a.error(a.send(condition, "notify", 2)) == .notOwner)
    }

    @Test func notifyAllWakesEveryWaiterAndNotifyNWakesTheFirstN() throws {
        let context = TestContext()
        let clients = try (1...4).map { try TestClient(context, id: UInt64($0)) }
        let condition = try clients[0].new(.condition, name: "C")
        for client in clients.dropFirst() { _ = try client.new(.condition, name: "C") }
        var waits: [UInt64] = []
        for client in clients.dropFirst() {
            _ = try client.call(condition, "acquire", 1)
            waits.append(try client.send(condition, "wait", 1))
        }
        _ = try clients[0].call(condition, "acquire", 1)
        _ = try clients[0].call(condition, "notify", 1, 2)
        _ = try clients[0].call(condition, "release", 1)
        // The first notified waiter holds the lock; the second queues behind it; the third waits on.
        #expect(try clients[1].answer(waits[0]) == .success(true))
        #expect(try clients[2].answer(waits[1]) == nil)
        _ = try clients[1].call(condition, "release", 1)
        #expect(try clients[2].answer(waits[1]) == .success(true))
        _ = try clients[2].call(condition, "notify_all", 1)
        _ = try clients[2].call(condition, "release", 1)
        #expect(try clients[3].answer(waits[2]) == .success(true))
    }
}

@Suite struct EventBarrierObjectTests {
    @Test func eventWaitersWakeOnSetAndTimeOutWithFalse() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let event = try a.new(.event, name: "E")
        _ = try b.new(.event, name: "E")
        let waits = try [b.send(event, "wait"), b.send(event, "wait", 5.0)]
        let timed = try a.send(event, "wait", 0.1)
        try a.expire(timed)
        #expect(try a.answer(timed) == .success(false))
        _ = try a.call(event, "set")
        for wait in waits { #expect(try b.answer(wait) == .success(true)) }
        #expect(try a.call(event, "wait", 0.0) == true)
        _ = try a.call(event, "clear")
        #expect(try a.call(event, "is_set") == false)
    }

    @Test func barrierReleasesEveryPartyWithDistinctIndicesAndTheLastGetsZero() throws {
        let context = TestContext()
        let clients = try (1...3).map { try TestClient(context, id: UInt64($0)) }
        let barrier = try clients[0].new(.barrier, ["parties": 3], name: "B")
        for client in clients.dropFirst() { _ = try client.new(.barrier, name: "B") }
        let first = try clients[0].send(barrier, "wait")
        let second = try clients[1].send(barrier, "wait")
        #expect(try clients[0].call(barrier, "n_waiting") == 2)
        let last = try clients[2].call(barrier, "wait")
        #expect(last["index"] == 0)
        #expect(try clients[0].answer(first)?.get()["index"] == 2)
        #expect(try clients[1].answer(second)?.get()["index"] == 1)
    }

    @Test func barrierActionRunsInItsCreatorsSessionBeforeAnyPartyContinues() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let barrier = try a.new(.barrier, ["parties": 2, "action": true], name: "B")
        _ = try b.new(.barrier, name: "B")
        let runner = try a.send(barrier, "await_action")
        #expect(try a.answer(runner) == nil, "no round has filled")
        #expect(try b.error(b.send(barrier, "await_action")) == .valueError, "the action runs in one session")
        let first = try a.send(barrier, "wait")
        let last = try b.send(barrier, "wait")
        #expect(try a.answer(runner) != nil, "the round filled: the creator runs the action")
        #expect(try a.answer(first) == nil && b.answer(last) == nil, "nobody goes on before the action")
        _ = try a.call(barrier, "action_done", true)
        #expect(try a.answer(first)?.get()["index"] == 1)
        #expect(try b.answer(last)?.get()["index"] == 0)
        // A round that fills before the creator asks again is remembered; a failing action
        // breaks it, saying why.
        let again = try a.send(barrier, "wait")
        let lastAgain = try b.send(barrier, "wait")
        #expect(try a.call(barrier, "await_action") == .null)
        _ = try a.call(barrier, "action_done", false, "ActionFailed()")
        #expect(try a.error(again) == .brokenBarrier)
        #expect(try b.error(lastAgain) == .brokenBarrier)
        #expect(try a.call(barrier, "broken") == true)
        _ = try a.call(barrier, "reset")
        #expect(try a.call(barrier, "broken") == false)
    }

    @Test func aRoundBreaksWhenTheSessionThatRunsItsActionIsGone() throws {
        let context = TestContext()
        let (a, b) = (try TestClient(context, id: 1), try TestClient(context, id: 2))
        let barrier = try a.new(.barrier, ["parties": 2, "action": true], name: "B")
        _ = try b.new(.barrier, name: "B")
        _ = try a.send(barrier, "await_action")
        let waiting = try b.send(barrier, "wait")
        a.session.end()
        #expect(try b.error(b.send(barrier, "wait")) == .brokenBarrier)
        #expect(try b.error(waiting) == .brokenBarrier)
    }

    @Test func aTimedOutOrDeadPartyBreaksTheBarrierForTheRest() throws {
        let context = TestContext()
        let clients = try (1...3).map { try TestClient(context, id: UInt64($0)) }
        let barrier = try clients[0].new(.barrier, ["parties": 3], name: "B")
        for client in clients.dropFirst() { _ = try client.new(.barrier, name: "B") }
        let survivor = try clients[0].send(barrier, "wait")
        _ = try clients[1].send(barrier, "wait")
        clients[1].session.end()
        #expect(try clients[0].error(survivor) == .brokenBarrier)
        _ = try clients[0].call(barrier, "reset")
        let waiting = try clients[0].send(barrier, "wait")
        let timed = try clients[2].send(barrier, "wait", 0.1)
        try clients[2].expire(timed)
        #expect(try clients[2].error(timed) == .brokenBarrier)
        #expect(try clients[0].error(waiting) == .brokenBarrier)
        #expect(try clients[2].error(clients[2].send(barrier, "wait")) == .brokenBarrier)
    }

    @Test func valueGetLockIsOneRLockPerValue() throws {
        let context = TestContext()
        let a = try TestClient(context, id: 1)
        let value = try a.new(.value, ["typecode": "i", "value": 1])
        let first = try a.call(value, "get_lock")
        let second = try a.call(value, "get_lock")
        #expect(first == second && first.objectRefValue?.type == .rlock)
        let lock = try #require(first.objectRefValue).id
        #expect(try grantOf(a.call(lock, "acquire", 1)).acquired)
        #expect(try grantOf(a.call(lock, "acquire", 1)).acquired)  // reentrant
    }
}

/// Random interleavings of puts, gets, cancels, timeouts and session deaths against one
/// queue and one lock, checked against what must hold whatever the order.
@Suite struct RandomizedBlockingTests {
    /// A seeded generator, so a failing interleaving can be replayed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func next(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func queueItemsAreDeliveredAtMostOnceAndNoneIsLost(seed: UInt64) throws {
        var random = SplitMix(state: seed)
        let context = TestContext()
        var clients = try (1...4).map { try TestClient(context, id: UInt64($0)) }
        var nextSession: UInt64 = 5
        let queue = try clients[0].new(.queue, ["maxsize": 3], name: "q")
        for client in clients.dropFirst() { _ = try client.new(.queue, name: "q") }
        var nextItem = 0
        var puts: [(client: Int, request: UInt64, item: Int)] = []  // puts whose outcome is pending or known
        var gets: [(client: Int, request: UInt64)] = []
        var delivered: [Int] = []
        var refusedOrWithdrawn: Set<Int> = []
        var accepted: Set<Int> = []
        for _ in 0..<400 {
            let c = random.next(clients.count)
            switch random.next(6) {
            case 0, 1:
                let item = nextItem
                nextItem += 1
                puts.append((c, try clients[c].send(queue, "put", .integer(item), .bool(random.next(2) == 0), 5.0), item))
            case 2, 3:
                gets.append((c, try clients[c].send(queue, "get", .bool(random.next(3) != 0), 5.0)))
            case 4 where !gets.isEmpty || !puts.isEmpty:
                // Cancel or time out something at random (it may already be answered).
                if random.next(2) == 0, let get = gets.randomElement(using: &random) {
                    random.next(2) == 0 ? try clients[get.client].cancel(get.request) : try clients[get.client].expire(get.request)
                } else if let put = puts.randomElement(using: &random) {
                    random.next(2) == 0 ? try clients[put.client].cancel(put.request) : try clients[put.client].expire(put.request)
                }
            default:
                // A session dies; a new one takes its place.
                clients[c].session.end()
                let fresh = try TestClient(context, id: nextSession)
                nextSession += 1
                _ = try fresh.new(.queue, name: "q")
                gets.removeAll { $0.client == c }
                for put in puts where put.client == c {
                    // A put the dead session never saw answered either got in or did not; the
                    // queue decides, and the final drain tells.
                    if try clients[c].answer(put.request) == nil { refusedOrWithdrawn.insert(put.item) }
                }
                puts.removeAll { $0.client == c }
                clients[c] = fresh
            }
            for put in puts {
                switch try clients[put.client].answer(put.request) {
                case .success?: accepted.insert(put.item)
                case .failure?: refusedOrWithdrawn.insert(put.item)
                case nil: break
                }
            }
            for get in gets {
                if case .success(let value)? = try clients[get.client].answer(get.request), let item = value.int64Value {
                    delivered.append(Int(item))
                }
            }
            puts.removeAll { (try? clients[$0.client].answer($0.request)) != nil }
            gets.removeAll { (try? clients[$0.client].answer($0.request)) != nil }
        }
        // Drain what is left: every accepted item comes out exactly once overall.
        let drainer = try TestClient(context, id: 999)
        _ = try drainer.new(.queue, name: "q")
        while case .success(let value)? = try drainer.answer(try drainer.send(queue, "get", false)), let item = value.int64Value {
            delivered.append(Int(item))
        }
        #expect(accepted.count > 50 && !refusedOrWithdrawn.isEmpty, "the run exercised too little")
        #expect(delivered.count == Set(delivered).count, "an item was delivered twice")
        #expect(accepted.isSubset(of: Set(delivered)), "an accepted item was lost")
        #expect(Set(delivered).subtracting(accepted).isSubset(of: refusedOrWithdrawn.union(Set(puts.map(\.item)))))
    }

    @Test(arguments: [11, 12, 13, 14, 15, 16])
    func aLockHasAtMostOneHolderAndGrantsInArrivalOrder(seed: UInt64) throws {
        var random = SplitMix(state: seed)
        let context = TestContext()
        let clients = try (1...5).map { try TestClient(context, id: UInt64($0)) }
        let lock = try clients[0].new(.lock, name: "L")
        for client in clients.dropFirst() { _ = try client.new(.lock, name: "L") }
        var holder: Int?
        var waiting: [(client: Int, request: UInt64)] = []  // in arrival order
        var lastToken: UInt64 = 0
        for _ in 0..<300 {
            let c = random.next(clients.count)
            if holder == c {
                _ = try clients[c].call(lock, "release", 1)
                holder = nil
            } else if !waiting.contains(where: { $0.client == c }) {
                if random.next(4) == 0 {
                    let grant = try grantOf(clients[c].call(lock, "acquire", 1, false))
                    #expect(grant.acquired == (holder == nil && waiting.isEmpty))
                    if grant.acquired {
                        holder = c
                        #expect(grant.fencingToken > lastToken)
                        lastToken = grant.fencingToken
                    }
                    continue
                }
                waiting.append((c, try clients[c].send(lock, "acquire", 1)))
            } else if random.next(3) == 0, let index = waiting.firstIndex(where: { $0.client == c }) {
                try clients[c].cancel(waiting[index].request)
                #expect(try clients[c].error(waiting[index].request) == .cancelled || holder == c)
                if try clients[c].error(waiting[index].request) == .cancelled { waiting.remove(at: index) }
            }
            // Whoever got the lock must be the first in line, and be alone.
            for (index, waiter) in waiting.enumerated() {
                guard case .success(let answer)? = try clients[waiter.client].answer(waiter.request) else { continue }
                let grant = try grantOf(answer)
                #expect(index == 0 && holder == nil, "granted out of order or while held")
                #expect(grant.fencingToken > lastToken)
                lastToken = grant.fencingToken
                holder = waiter.client
                waiting.remove(at: index)
                break
            }
        }
        #expect(lastToken > 20, "the run exercised too little")
    }
}

/// Everything a manager stores can be read back through every method that wraps it, by a
/// decoder with the protocol's default limits (the test client decodes every answer so).
@Suite struct StoredNestingTests {
    /// A value whose deepest scalar sits `levels` below its top.
    func nested(_ levels: Int) -> WireValue {
        var value: WireValue = 7
        for _ in 0..<levels { value = [value] }
        return value
    }

    /// Whether a peer decoding with the protocol's default limits can read `answer`.
    func readable(_ answer: WireValue) -> Bool {
        (try? WireValue(messagePack: Array(answer.encoded().readableBytesView))) != nil
    }

    @Test func theDeepestStorableValueReadsBackThroughEveryWrappingAnswer() throws {
        let context = TestContext()
        let client = try TestClient(context, id: 1)
        let dict = try client.new(.dict, name: "D")
        let list = try client.new(.list, name: "L")
        let deepest = nested(ObjectStore.maxStoredNesting)
        _ = try client.call(dict, "setitem", "k", deepest)
        _ = try client.call(list, "append", deepest)
        let answers = [
            try client.call(dict, "getitem", "k"), try client.call(dict, "items"), try client.call(dict, "copy"),
            try client.call(dict, "page", nil, 10), try client.call(dict, "popitem"), try client.call(list, "getslice", nil, nil, nil),
            try client.call(list, "copy"),
        ]
        #expect(answers.allSatisfy(readable))
        _ = try client.call(dict, "setitem", "k", deepest)
        let batch = try client.send(.batch([
            .call(object: dict, method: "items", arguments: []), .call(object: dict, method: "page", arguments: [nil, 10]),
            .call(object: list, method: "copy", arguments: []),
        ]))
        let batchAnswer = try #require(try client.answer(batch)).get()
        #expect(readable(batchAnswer), "a batch of pages, the deepest wrapping")
        #expect(!readable(nested(ObjectStore.maxStoredNesting + 6)), "the limit is real")
    }

    @Test func oneLevelMoreIsRefusedAsItIsStoredNotWhenItIsRead() throws {
        let context = TestContext()
        let client = try TestClient(context, id: 1)
        let dict = try client.new(.dict, name: "D")
        let tooDeep = nested(ObjectStore.maxStoredNesting + 1)
        #expect(try client.error(client.send(dict, "setitem", "k", tooDeep)) == .valueError)
        #expect(try client.error(client.send(.new(type: .list, name: nil, options: ["items": [tooDeep]]))) == .valueError)
        #expect(try client.call(dict, "len") == 0)
    }
}

@Suite struct RequestIDTests {
    /// SPEC 3: a request id is unique among a session's requests in flight. One that reuses
    /// the id of a parked call is refused and does not run; the parked call is unharmed.
    @Test func aRequestReusingTheIdOfAParkedCallIsRefusedAndDoesNotRun() throws {
        let context = TestContext()
        let client = try TestClient(context, id: 1)
        let queue = try client.new(.queue, name: "Q")
        let waiting = try client.send(queue, "get", true, 30)
        #expect(try client.answer(waiting) == nil, "parked")
        try client.send(.call(object: queue, method: "put", arguments: ["reused", true, nil]), id: waiting)
        #expect(try client.error(waiting) == .badRequest)
        #expect(try client.call(queue, "qsize") == 0, "the refused put did not run")
        _ = try client.call(queue, "put", "item", true, nil)
        #expect(try client.answer(waiting)?.get() == "item", "the parked get still got its answer")
    }
}
