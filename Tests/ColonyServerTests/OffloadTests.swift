import ColonyWire
import NIOCore
import Testing

@testable import ColonyServer

/// Heavy requests leave the event loop: which ones are heavy, and how a session hands them
/// back and runs them.
@Suite struct OffloadTests {
    let store = ObjectStore()

    private func list(_ count: Int) throws -> any SharedObject {
        let reference = try store.create(type: .list, name: nil, options: .null)
        let list = try #require(store.object(reference.id))
        var changes = ReferenceChanges()
        _ = try list.call("extend", [.array((0..<count).map { .integer(Int64($0)) })], &changes)
        return list
    }

    private func heavy(_ request: Request) -> Bool { RequestWeight.isHeavy(request, in: store) }

    @Test func workThatGrowsWithABigObjectIsHeavyAndItemWorkIsNot() throws {
        let big = try list(RequestWeight.heavyElements)
        let small = try list(10)
        for method in ["copy", "count", "index", "sort", "reverse", "contains", "clear", "add", "insert", "delitem", "getslice"] {
            #expect(RequestWeight.isHeavy(big, method, [.integer(0)]), "\(method) of a big list")
            #expect(!RequestWeight.isHeavy(small, method, [.integer(0)]), "\(method) of a small list")
        }
        for method in ["getitem", "setitem", "append", "len", "extend"] {
            #expect(!RequestWeight.isHeavy(big, method, [.integer(0), .integer(1)]), "\(method) of a big list")
        }
        #expect(!RequestWeight.isHeavy(big, "pop", []))
        #expect(!RequestWeight.isHeavy(big, "pop", [.integer(-1)]))
        #expect(RequestWeight.isHeavy(big, "pop", [.integer(0)]), "popping the first item moves every other one")
        // A small list multiplied into many items is heavy too.
        #expect(RequestWeight.isHeavy(small, "mul", [.integer(Int64(RequestWeight.heavyElements))]))
        #expect(RequestWeight.isHeavy(small, "imul", [.integer(Int64.max)]))
        #expect(!RequestWeight.isHeavy(small, "mul", [.integer(3)]))
    }

    @Test func sizedCreationsPagesStatusAndBatchesAreWeighed() throws {
        let array: (Int64) -> Request = { .new(type: .array, name: nil, options: ["typecode": "q", "size": .integer($0)]) }
        #expect(heavy(array(30_000_000)))
        #expect(!heavy(array(1000)))
        #expect(!heavy(.new(type: .array, name: nil, options: ["typecode": "q", "items": [1, 2, 3]])))
        #expect(heavy(.status))
        let dict = try store.create(type: .dict, name: nil, options: .null)
        #expect(!heavy(.call(object: dict.id, method: "page", arguments: [.null, 100])))
        #expect(heavy(.call(object: dict.id, method: "page", arguments: [.null, .integer(1 << 20)])))
        let queue = try store.create(type: .queue, name: nil, options: .null)
        #expect(!heavy(.call(object: queue.id, method: "get_many", arguments: [10, false, .null])))
        #expect(heavy(.call(object: queue.id, method: "get_many", arguments: [.integer(1 << 20), false, .null])))
        #expect(!heavy(.call(object: 999_999, method: "copy", arguments: [])), "a missing object fails fast")
        // Freeing a big object walks its items.
        let big = try store.create(type: .array, name: "big", options: ["typecode": "q", "size": .integer(Int64(RequestWeight.heavyElements))])
        #expect(heavy(.release(object: big.id, seen: 1)) && heavy(.delete(name: "big")))
        #expect(!heavy(.release(object: dict.id, seen: 1)) && !heavy(.delete(name: "nothing")))
        #expect(!heavy(.attach(object: big.id)))
        #expect(heavy(.batch([.call(object: dict.id, method: "len", arguments: []), array(1 << 20)])))
        #expect(!heavy(.batch([.call(object: dict.id, method: "len", arguments: []), array(10)])))
        #expect(RequestWeight.isHeavy(bodyBytes: RequestWeight.heavyBodyBytes))
        #expect(!RequestWeight.isHeavy(bodyBytes: RequestWeight.heavyBodyBytes - 1))
    }

    @Test func bigAnswersAreWeighedByAWalkThatStopsEarly() {
        let many = WireValue.array((0..<RequestWeight.heavyElements).map { .integer(Int64($0)) })
        #expect(RequestWeight.isHeavy(answer: many))
        #expect(!RequestWeight.isHeavy(answer: .array(Array(repeating: 1, count: 1000))))
        #expect(!RequestWeight.isHeavy(answer: 42) && !RequestWeight.isHeavy(answer: .null))
        let nested = WireValue.array(Array(repeating: .array(Array(repeating: "x", count: 7000)), count: 10))
        #expect(RequestWeight.isHeavy(answer: nested), "items count wherever they nest")
        #expect(RequestWeight.isHeavy(answer: .map((0..<40_000).map { WirePair(.integer(Int64($0)), "v") })))
        #expect(RequestWeight.isHeavy(answer: .bytes(Array(repeating: 0, count: RequestWeight.heavyAnswerBytes))))
        #expect(!RequestWeight.isHeavy(answer: .string(String(repeating: "y", count: 1 << 20))))
    }

    @Test func aSmallRequestForABigValueHasItsAnswerEncodedOffTheLoop() throws {
        let context = TestContext()
        var session = try SessionTests().openSession(context, offloads: true)
        let dict = try context.store.create(type: .dict, name: "d", options: .null)
        let big = WireValue.array((0..<RequestWeight.heavyElements).map { .integer(Int64($0)) })
        _ = try context.store.call(object: dict.id, method: "setitem", arguments: ["big", big])
        _ = try context.store.call(object: dict.id, method: "setitem", arguments: ["small", 1])
        func get(_ key: WireValue, id: UInt64) -> [SessionAction] {
            let message = Message(kind: .request, requestID: id, body: Request.call(object: dict.id, method: "getitem", arguments: [key]).wireValue.encoded())
            return session.receive(message.frames(maxBodySize: 64)[0], now: 2)
        }
        #expect(get("big", id: 3) == [.encodeOffLoop(requestID: 3, big)])
        #expect(get("small", id: 4) == [.answer(requestID: 4, .success(1))])
    }

    /// The answer a session's `.write` carries (frame bodies of at most 64 bytes).
    private func writtenAnswer(_ actions: [SessionAction]) throws -> Message {
        #expect(actions.count == 1)
        guard case .write(var bytes) = try #require(actions.first) else {
            Issue.record("expected bytes to write, got \(actions)")
            throw CancellationError()
        }
        var assembler = MessageAssembler()
        while let frame = try bytes.readFrame(maxBodySize: 64) {
            if let message = try assembler.receive(frame) { return message }
        }
        Issue.record("no whole message in \(actions)")
        throw CancellationError()
    }

    @Test func aSessionHandsBackHeavyRequestsAndRunsThemWhenAsked() throws {
        let context = TestContext()
        var session = try SessionTests().openSession(context, offloads: true)
        let create = Message(
            kind: .request, requestID: 5,
            body: Request.new(type: .array, name: nil, options: ["typecode": "q", "size": .integer(Int64(RequestWeight.heavyElements))]).wireValue.encoded())
        let frames = create.frames(maxBodySize: 64)
        #expect(frames.count == 1)
        let actions = session.receive(frames[0], now: 2)
        #expect(actions == [.offload(create)])
        #expect(context.store.count == 0, "nothing ran yet")
        let answer = try writtenAnswer(session.runOffloaded(create, maxFrameBody: 64))
        session.offloadReturned()
        #expect(answer.kind == .response && answer.requestID == 5)
        let array = try #require(try answer.value().objectRefValue)
        // Item work on the big array stays inline.
        let length = Message(kind: .request, requestID: 6, body: Request.call(object: array.id, method: "len", arguments: []).wireValue.encoded())
        #expect(session.receive(length.frames(maxBodySize: 64)[0], now: 3) == [.answer(requestID: 6, .success(.integer(Int64(RequestWeight.heavyElements))))])
        #expect(session.requestsServed == 2)
    }

    @Test func aLargeBodyIsHandedBackBeforeItIsDecodedAndItsErrorsComeFromTheRun() throws {
        var session = try SessionTests().openSession(TestContext(), offloads: true)
        let garbage = Message(kind: .request, requestID: 9, body: ByteBuffer(repeating: 0xc1, count: RequestWeight.heavyBodyBytes))
        var actions: [SessionAction] = []
        for frame in garbage.frames(maxBodySize: 64) { actions += session.receive(frame, now: 2) }
        #expect(actions == [.offload(garbage)])
        let answer = try writtenAnswer(session.runOffloaded(garbage, maxFrameBody: 64))
        #expect(answer.kind == .error && answer.requestID == 9)
        #expect(try RemoteError(wireValue: answer.value()).code == .badRequest)
    }
}
