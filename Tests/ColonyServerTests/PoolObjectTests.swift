import ColonyWire
import Testing
import Threading

@testable import ColonyServer

/// Records what the pool sends a worker session.
final class RecordingWorkerOutlet: AnswerOutlet, WorkerOutlet, @unchecked Sendable {
    private let lock = Lock()
    private var sent: [(FrameKind, UInt64, WireValue)] = []
    private(set) var disconnected: [String] = []

    func deliver(requestID: UInt64, _ outcome: Result<WireValue, RemoteError>) {}
    func send(_ message: Message) {
        let value = (try? message.value()) ?? .string("an undecodable body")
        lock.withLock { sent.append((message.kind, message.requestID, value)) }
    }
    func writeQueued() {}
    func disconnect(reason: String) { lock.withLock { disconnected.append(reason) } }

    func take() -> [(FrameKind, UInt64, WireValue)] {
        lock.withLock {
            defer { sent = [] }
            return sent
        }
    }
}

/// A worker node's session driven without a socket.
final class TestWorker {
    var session: ManagerSession
    let outlet = RecordingWorkerOutlet()
    private(set) var replies: [SessionAction] = []

    init(_ context: TestContext, id: UInt64) throws {
        let configuration = HandshakeConfiguration(authKey: try AuthKey(Array(repeating: UInt8(5), count: 32)), failureDelayNanoseconds: 0)
        session = ManagerSession(
            id: id, context: context, handshake: configuration, maxFrameBody: 1 << 20, maxMessageSize: 1 << 20, maxInFlight: 64,
            outlet: outlet, now: 0)
        var client = ClientHandshake(configuration: configuration, role: "worker")
        var toServer = [client.start(now: 0)]
        while let frame = toServer.popLast() {
            for action in session.receive(frame, now: 1) {
                guard case .send(let reply) = action else { continue }
                if case .send(let frames) = client.receive(reply, now: 1) { toServer += frames }
            }
        }
        #expect(session.needsClock, "a worker's heartbeats are timed")
    }

    /// Sends one pool message; returns what the session answered directly.
    @discardableResult
    func send(_ message: some PoolMessage, requestID: UInt64 = 0) -> [SessionAction] {
        let actions = session.receive(message.frame(requestID: requestID), now: 5)
        replies += actions
        return actions
    }

    /// The assignments sent to this worker so far: (assignment id, calls).
    func assignments() throws -> [(UInt64, TaskAssignment)] {
        try outlet.take().filter { $0.0 == .taskAssign }.map { ($0.1, try TaskAssignment(wireValue: $0.2)) }
    }
}

@Suite struct PoolObjectTests {
    @Test func aSubmittedCallReachesAWorkerAndItsResultTheWaitingClient() throws {
        let context = TestContext()
        let worker = try TestWorker(context, id: 1)
        #expect(worker.send(WorkerHello(node: "n", capacity: 2, tasks: ["echo"], pid: 9)).isEmpty)
        let client = try TestClient(context, id: 2)
        let pool = try client.new(.pool, name: "default")
        let job = try client.call(pool, "submit", "echo", [7])
        let waiting = try client.send(pool, "result", job, nil)
        #expect(try client.answer(waiting) == nil, "parked until the worker answers")
        let (assignment, body) = try #require(try worker.assignments().first)
        #expect(body.task == "echo")
        #expect(body.calls.values == [[7]])
        #expect(body.starred, "a submitted call is its argument list")
        #expect(worker.send(TaskResult(results: [7]), requestID: assignment).isEmpty)
        #expect(try client.answer(waiting) == .success(7))
        let rows = try client.call(pool, "workers").arrayValue ?? []
        #expect(rows.first?["node"] == "n")
        #expect(rows.first?["done"] == 1)
    }

    /// `apply` is `submit` and `result` in one request: parked until the worker answers; a
    /// refusal at once; a cancelled wait cancels the call, aborts it on its worker and leaves
    /// no job behind.
    @Test func applyParksUntilItsCallHasRunAndACancelledApplyLeavesNothing() throws {
        let context = TestContext()
        let worker = try TestWorker(context, id: 1)
        worker.send(WorkerHello(node: "n", capacity: 2, tasks: ["echo"], pid: 9))
        let client = try TestClient(context, id: 2)
        let pool = try client.new(.pool, name: "default")
        let applied = try client.send(pool, "apply", "echo", [7])
        #expect(try client.answer(applied) == nil, "parked until the worker answers")
        let (assignment, body) = try #require(try worker.assignments().first)
        #expect(body.calls.values == [[7]])
        worker.send(TaskResult(results: [7]), requestID: assignment)
        #expect(try client.answer(applied) == .success(7))
        #expect(try client.error(client.send(pool, "apply", "nope", [1])) == .noSuchTask)
        #expect(try client.error(client.send(pool, "apply", "echo", 1)) == .wrongType, "arguments are a list")

        let cancelled = try client.send(pool, "apply", "echo", [8])
        let (running, _) = try #require(try worker.assignments().first)
        try client.cancel(cancelled)
        #expect(try client.error(cancelled) == .cancelled)
        #expect(worker.outlet.take().map { $0.0 } == [.cancel], "the running call is aborted")
        worker.send(TaskFailure(index: 0, results: [], errorType: "Cancelled", message: "aborted", lost: true), requestID: running)
        #expect(try client.call(pool, "close") == nil)
        #expect(try client.call(pool, "join", 0) == true, "no job of this session is left")
    }

    /// A map's calls are read encoded, never as values; calls that hold references, or nest
    /// deeper than stored values may, take the general path and get its checks and errors.
    @Test func mapCallsReadEncodedKeepTheGeneralPathsChecks() throws {
        let context = TestContext()
        let worker = try TestWorker(context, id: 1)
        #expect(worker.send(WorkerHello(node: "n", capacity: 4, tasks: ["echo"], pid: 9)).isEmpty)
        let client = try TestClient(context, id: 2)
        let pool = try client.new(.pool, name: "default")
        let calls: [WireValue] = [1, "two", [3.5, nil], ["k": .bytes([4])]]
        let body = Request.call(object: pool, method: "map", arguments: ["echo", .array(calls), 4, true, false]).wireValue.encoded()
        #expect(PoolCallsRequest(body: body, limits: .default)?.calls.values == calls)
        let job = try client.call(pool, "map", "echo", .array(calls), 4, true, false)
        let (assignment, sent) = try #require(try worker.assignments().first)
        #expect(sent.calls.values == calls)
        #expect(worker.send(TaskResult(results: sent.calls), requestID: assignment).isEmpty)
        #expect(try client.call(pool, "next", job, nil, nil).arrayValue?[1] == .array(calls))
        // A result that holds a reference is answered as a value, whose reference the
        // session counts; the others are written from their bytes.
        let dict = try client.new(.dict)
        let shared: WireValue = .objectRef(ObjectRef(type: .dict, id: dict))
        let second = try client.call(pool, "map", "echo", [1, 2], 2, true, false)
        let (again, _) = try #require(try worker.assignments().first)
        #expect(worker.send(TaskResult(results: [shared, 2]), requestID: again).isEmpty)
        #expect(try client.call(pool, "next", second, nil, nil).arrayValue?[1] == [shared, 2])

        let missing: WireValue = .objectRef(ObjectRef(type: .dict, id: 999))
        let withReference = Request.call(object: pool, method: "map", arguments: ["echo", [1, missing]]).wireValue.encoded()
        #expect(PoolCallsRequest(body: withReference, limits: .default) == nil, "references are checked on the general path")
        #expect(try client.error(client.send(pool, "map", "echo", [1, missing])) == .noSuchObject)
        var deep: WireValue = [1]
        for _ in 0..<ObjectStore.maxStoredNesting { deep = [deep] }
        #expect(try client.error(client.send(pool, "map", "echo", [deep])) == .valueError, "nested deeper than a stored value may")
        #expect(try client.error(client.send(pool, "map", "echo", [1, 2], nil, true, false, true)) == .wrongType, "starmap calls are argument lists")
    }

    @Test func namedSubmitsArePushedThroughOneParkedResultsCall() throws {
        let context = TestContext()
        let worker = try TestWorker(context, id: 1)
        worker.send(WorkerHello(node: "n", capacity: 4, tasks: ["echo"], pid: 9))
        let client = try TestClient(context, id: 2)
        let pool = try client.new(.pool, name: "default")
        #expect(try client.error(client.send(pool, "submit", "echo", [1], .integer(UInt64(3) << 32 | 1))) == .valueError, "another session's id")
        #expect(try client.error(client.send(pool, "submit", "echo", [1], .integer(UInt64(2) << 32))) == .valueError, "number 0")
        let first = UInt64(2) << 32 | 1, second = UInt64(2) << 32 | 2
        _ = try client.call(pool, "submit", "echo", [10], .integer(first))
        _ = try client.call(pool, "submit", "echo", [20], .integer(second))
        let results = try client.send(pool, "results", nil, nil)
        #expect(try client.answer(results) == nil, "parked until a named call finishes")
        for (assignment, body) in try worker.assignments() {
            worker.send(TaskResult(results: body.calls.values.map { $0.arrayValue![0] }), requestID: assignment)
        }
        // The parked call is answered as soon as one outcome is in; the other waits for the
        // next call.
        let pushed = try #require(try client.answer(results)?.get().arrayValue)
        let rest = try #require(try client.call(pool, "results", nil, 0).arrayValue)
        #expect(pushed.count == 1 && rest.count == 1)
        #expect((pushed + rest).map { $0.arrayValue! } == [[.integer(first), true, 10], [.integer(second), true, 20]])
        #expect(try client.call(pool, "results", nil, 0) == [], "nothing left")
    }

    @Test func aNamedMapTakesItsFeedsBeforeItsAnswerIsRead() throws {
        let context = TestContext()
        let worker = try TestWorker(context, id: 1)
        worker.send(WorkerHello(node: "n", capacity: 4, tasks: ["echo"], pid: 9))
        let client = try TestClient(context, id: 2)
        let pool = try client.new(.pool, name: "default")
        let job = UInt64(2) << 32 | 7
        #expect(try client.error(client.send(pool, "map", "echo", [1], 1, true, true, false, nil, .integer(UInt64(5) << 32 | 1))) == .valueError)
        // The map and its feeds go out together; the session runs them in order.
        let map = try client.send(pool, "map", "echo", [1, 2], 2, true, true, false, 5, .integer(job))
        let feeds = [try client.send(pool, "feed", .integer(job), [3, 4], false), try client.send(pool, "feed", .integer(job), [5], true)]
        #expect(try client.answer(map)?.get() == .integer(job))
        for feed in feeds { #expect(try client.answer(feed)?.get() == .null) }
        #expect(try client.error(client.send(pool, "map", "echo", [1], nil, true, false, false, nil, .integer(job))) == .valueError, "an id in use")
        for (assignment, body) in try worker.assignments() { worker.send(TaskResult(results: body.calls.values), requestID: assignment) }
        #expect(try client.call(pool, "next", .integer(job)).arrayValue?[1] == [1, 2, 3, 4, 5])
    }

    @Test func nonsenseFromWorkersIsRefusedWithoutHarm() throws {
        let context = TestContext()
        let greedy = try TestWorker(context, id: 1)
        let refusal = greedy.send(WorkerHello(node: "greedy", capacity: 1 << 30, tasks: [], pid: 1))
        #expect(refusal.contains(.close))
        let early = try TestWorker(context, id: 2)
        guard case .answer(_, .failure(let error))? = early.send(TaskResult(results: [1]), requestID: 5).first else {
            Issue.record("a result before any hello was accepted")
            return
        }
        #expect(error.code == .unsupported)
        early.send(WorkerHello(node: "early", capacity: 1, tasks: ["echo"], pid: 2))
        guard case .answer(let id, .failure(let unheld))? = early.send(TaskResult(results: [1]), requestID: 77).first else {
            Issue.record("a result for an assignment never sent was accepted")
            return
        }
        #expect(id == 77)
        #expect(unheld.code == .badRequest)
        // A client session may not pose as a worker.
        let client = try TestClient(context, id: 3)
        let pool = try client.new(.pool, name: "default")
        #expect(try client.call(pool, "submit", "echo", [1]).uint64Value != nil)
        #expect(try early.assignments().count == 1, "the pool carries on with the worker that behaves")
    }

    @Test func jobsBelongToTheirSessionAndACrashedSessionsJobsCanBeAdopted() throws {
        let context = TestContext()
        let worker = try TestWorker(context, id: 1)
        worker.send(WorkerHello(node: "n", capacity: 1, tasks: ["echo"], pid: 9))
        let first = try TestClient(context, id: 2)
        let pool = try first.new(.pool, name: "default")
        let job = try first.call(pool, "submit", "echo", [1])
        let second = try TestClient(context, id: 3)
        _ = try second.new(.pool, name: "default")
        #expect(try second.error(second.send(pool, "result", job, 0)) == .valueError, "another session's job")
        #expect(try second.error(second.send(pool, "adopt", job)) == .valueError, "its session is alive")
        first.session.end()  // no goodbye: a crash
        _ = try second.call(pool, "adopt", job)
        let (assignment, _) = try #require(try worker.assignments().first)
        worker.send(TaskResult(results: [1]), requestID: assignment)
        #expect(try second.call(pool, "result", job, nil) == 1)
    }

    @Test func aSessionThatSaysGoodbyeTakesItsQueuedWorkWithIt() throws {
        let context = TestContext()
        let client = try TestClient(context, id: 2)
        let pool = try client.new(.pool, name: "default")
        _ = try client.call(pool, "map", "echo", [1, 2, 3], 1, true, false)
        #expect(try client.call(pool, "workers") == [])
        _ = client.session.receive(Frame(kind: .goodbye), now: 3)
        client.session.end()
        let status = try #require(context.store.describePools().arrayValue?.first)
        #expect(status["queued"] == 0)
        #expect(status["jobs"] == 0)
    }
}
