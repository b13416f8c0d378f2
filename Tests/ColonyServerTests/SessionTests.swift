import ColonyWire
import NIOCore
import Testing

@testable import ColonyServer

final class TestContext: ManagerContext, @unchecked Sendable {
    let store = ObjectStore()
    func statusReport() -> WireValue { ["objects": store.describeObjects()] }
}

@Suite struct SessionTests {
    let key = Array(repeating: UInt8(3), count: 32)

    func openSession(_ context: TestContext, id: UInt64 = 1, offloads: Bool = false) throws -> ManagerSession {
        let configuration = HandshakeConfiguration(authKey: try AuthKey(key), failureDelayNanoseconds: 0)
        var session = ManagerSession(
            id: id, context: context, handshake: configuration, maxFrameBody: 64, maxMessageSize: 1 << 20, maxInFlight: 16, outlet: RecordingOutlet(),
            offloadsHeavyRequests: offloads, now: 0)
        var client = ClientHandshake(configuration: configuration)
        var toServer = [client.start(now: 0)]
        while let frame = toServer.popLast() {
            for action in session.receive(frame, now: 1) {
                guard case .send(let reply) = action else { continue }
                if case .send(let frames) = client.receive(reply, now: 1) { toServer += frames }
            }
        }
        #expect(session.negotiated != nil)
        return session
    }

    /// The frames the NIO shell writes for `actions` (frame bodies at most 64 bytes).
    func written(_ actions: [SessionAction]) throws -> [Frame] {
        var bytes = ByteBuffer()
        for action in actions {
            switch action {
            case .send(let frame): bytes.writeFrame(frame)
            case .answer(let requestID, let result): bytes.writeAnswer(requestID: requestID, result, maxFrameBody: 64)
            case .answerEncoded(let requestID, let body): bytes.writeMessage(Message(kind: .response, requestID: requestID, body: body), maxFrameBody: 64)
            default: break
            }
        }
        var frames: [Frame] = []
        while let frame = try bytes.readFrame(maxBodySize: 64) { frames.append(frame) }
        #expect(bytes.readableBytes == 0)
        return frames
    }

    /// The first whole message among the frames written for `actions`.
    func firstMessage(_ actions: [SessionAction]) throws -> Message? {
        var assembler = MessageAssembler()
        for frame in try written(actions) {
            if let message = try assembler.receive(frame) { return message }
        }
        return nil
    }

    /// Sends a request; returns the reassembled answer frames' message.
    func request(_ session: inout ManagerSession, _ request: Request, id: UInt64, frameCount: Int? = nil) throws -> Message {
        var assembler = MessageAssembler()
        let body = request.wireValue.encoded()
        var answer: Message?
        var answerFrames = 0
        for frame in Message(kind: .request, requestID: id, body: body).frames(maxBodySize: 64) {
            for reply in try written(session.receive(frame, now: 2)) {
                answerFrames += 1
                if let message = try assembler.receive(reply) { answer = message }
            }
        }
        if let frameCount { #expect(answerFrames == frameCount) }
        return try #require(answer)
    }

    @Test func requestsAreAnsweredWithTheirIdsAndLargeOnesAreChunked() throws {
        let context = TestContext()
        var session = try openSession(context)
        let created = try request(&session, .new(type: .list, name: nil, options: .null), id: 7)
        #expect(created.kind == .response && created.requestID == 7)
        let reference = try #require(try created.value().objectRefValue)
        let big: [WireValue] = (0..<100).map { .string("item \($0)") }  // far more than one 64-byte frame
        _ = try request(&session, .call(object: reference.id, method: "extend", arguments: [.array(big)]), id: 8)
        let copy = try request(&session, .call(object: reference.id, method: "copy", arguments: []), id: 9)
        #expect(try copy.value() == .array(big))
        let bigBody = WireValue.array(big).encoded().readableBytes
        _ = try request(&session, .call(object: reference.id, method: "copy", arguments: []), id: 11, frameCount: (bigBody + 63) / 64)
        let error = try request(&session, .call(object: reference.id, method: "getitem", arguments: [1000]), id: 10)
        #expect(error.kind == .error)
        #expect(try RemoteError(wireValue: error.value()).code == .indexError)
    }

    @Test func malformedRequestsGetBadRequestAndTheSessionGoesOn() throws {
        let context = TestContext()
        var session = try openSession(context)
        let garbage = Frame(kind: .request, requestID: 3, body: ByteBuffer(bytes: [0xc1]))
        guard let reply = try firstMessage(session.receive(garbage, now: 2)) else {
            Issue.record("no answer to garbage")
            return
        }
        #expect(try RemoteError(wireValue: reply.value()).code == .badRequest)
        #expect(try request(&session, .status, id: 4).kind == .response)
    }

    @Test func pingGoodbyeAndUnknownFrames() throws {
        let context = TestContext()
        var session = try openSession(context)
        #expect(session.receive(Frame(kind: .ping, requestID: 5), now: 2) == [.send(Frame(kind: .pong, requestID: 5))])
        if let reply = try firstMessage(session.receive(Frame(kind: .taskResult, requestID: 6, value: [:]), now: 2)) {
            #expect(try RemoteError(wireValue: reply.value()).code == .unsupported)
        } else {
            Issue.record("no answer to an unexpected frame")
        }
        #expect(session.receive(Frame(kind: .goodbye), now: 2) == [.send(Frame(kind: .goodbye)), .close])
    }

    @Test func endingASessionFreesItsAnonymousObjects() throws {
        let context = TestContext()
        var session = try openSession(context)
        var other = try openSession(context, id: 2)
        let mine = try request(&session, .new(type: .dict, name: nil, options: .null), id: 1)
        _ = try request(&session, .new(type: .dict, name: "shared", options: .null), id: 2)
        let reference = try #require(try mine.value().objectRefValue)
        // The other session receives a reference inside an answer: it now holds one too.
        let holder = try request(&other, .new(type: .list, name: nil, options: .null), id: 1)
        let list = try #require(try holder.value().objectRefValue)
        _ = try request(&session, .call(object: list.id, method: "append", arguments: [.objectRef(reference)]), id: 3)
        #expect(context.store.count == 3)
        session.end()
        #expect(context.store.count == 3)  // the dict lives on inside the other session's list
        other.end()
        #expect(context.store.count == 1)  // only the named one is left
    }

    @Test func aSessionHoldsOneReferencePerObjectHoweverOftenItReceivesIt() throws {
        let context = TestContext()
        var session = try openSession(context)
        let outer = try #require(try request(&session, .new(type: .list, name: nil, options: .null), id: 1).value().objectRefValue)
        let inner = try #require(try request(&session, .new(type: .dict, name: nil, options: .null), id: 2).value().objectRefValue)
        _ = try request(&session, .call(object: outer.id, method: "append", arguments: [.objectRef(inner)]), id: 3)
        func innerReferences() -> WireValue? {
            context.store.describeObjects().arrayValue?.first { $0["id"]?.uint64Value == inner.id }?["refs"]
        }
        // Read 100 times and never released: the list's reference and the session's one.
        for id in UInt64(10)..<110 {
            #expect(try request(&session, .call(object: outer.id, method: "getitem", arguments: [0]), id: id).value() == .objectRef(inner))
        }
        #expect(innerReferences() == 2)
        _ = try request(&session, .call(object: outer.id, method: "clear", arguments: []), id: 200)
        #expect(innerReferences() == 1)
        // A release that has not seen every transfer (1 from `new`, 100 reads) is stale:
        // answers are on the way to a client that will make proxies of them.
        _ = try request(&session, .release(object: inner.id, seen: 100), id: 201)
        #expect(innerReferences() == 1)
        _ = try request(&session, .release(object: inner.id, seen: 1), id: 202)
        #expect(innerReferences() == nil, "freed once every transfer was released")
        // Without a count, the hold goes at once; releasing what is not held is harmless.
        let other = try #require(try request(&session, .new(type: .dict, name: nil, options: .null), id: 203).value().objectRefValue)
        _ = try request(&session, .attach(object: other.id), id: 204)
        _ = try request(&session, .release(object: other.id, seen: nil), id: 205)
        #expect(try request(&session, .release(object: other.id, seen: nil), id: 206).value() == .null)
        #expect(context.store.count == 1)
    }

    @Test func batchesRunInOrderAndReportEachOutcome() throws {
        let context = TestContext()
        var session = try openSession(context)
        let created = try request(&session, .new(type: .dict, name: nil, options: .null), id: 1)
        let id = try #require(try created.value().objectRefValue).id
        let answer = try request(
            &session,
            .batch([
                .call(object: id, method: "setitem", arguments: ["a", 1]),
                .call(object: id, method: "getitem", arguments: ["missing"]),
                .call(object: id, method: "getitem", arguments: ["a"]),
            ]), id: 2)
        let outcomes = try #require(try answer.value().arrayValue).map { try BatchOutcome(wireValue: $0) }
        #expect(outcomes[0] == .success(nil))
        if case .failure(let error) = outcomes[1] { #expect(error.code == .keyError) } else { Issue.record("expected KeyError") }
        #expect(outcomes[2] == .success(1))
    }

    @Test func onlyTheHandshakeAndWorkerSessionsReadTheClock() throws {
        let configuration = HandshakeConfiguration(authKey: try AuthKey(key), failureDelayNanoseconds: 0)
        let session = ManagerSession(
            id: 1, context: TestContext(), handshake: configuration, maxFrameBody: 64, maxMessageSize: 1 << 20, maxInFlight: 16,
            outlet: RecordingOutlet(), now: 0)
        #expect(session.needsClock)
        #expect(try !openSession(TestContext()).needsClock, "a client's requests never use the time")
    }

    @Test func wrongKeyFailsTheHandshake() throws {
        let context = TestContext()
        let server = HandshakeConfiguration(authKey: try AuthKey(key), failureDelayNanoseconds: 7)
        var session = ManagerSession(id: 1, context: context, handshake: server, maxFrameBody: 1024, maxMessageSize: 1024, maxInFlight: 4, outlet: RecordingOutlet(), now: 0)
        var client = ClientHandshake(configuration: HandshakeConfiguration(authKey: try AuthKey(Array(repeating: 9, count: 32))))
        guard case .send(let challenge) = session.receive(client.start(now: 0), now: 0).first,
            case .send(let proof) = client.receive(challenge, now: 0)
        else {
            Issue.record("handshake did not progress")
            return
        }
        guard case .failAfter(let delay, let frames) = session.receive(proof[0], now: 0).first else {
            Issue.record("a wrong key was accepted")
            return
        }
        #expect(delay == 7)
        #expect(try RemoteError(wireValue: frames[0].value()).code == .authFailed)
        #expect(session.negotiated == nil)
    }
}
