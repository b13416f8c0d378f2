import ColonyWire
import Foundation
import NIOCore
import Testing

@Suite struct CodableTests {
    struct Job: Codable, Equatable {
        var id: Int
        var name: String
        var weight: Double
        var tags: [String]
        var payload: [UInt8]
        var owner: String?
        var nested: Nested
        var byNumber: [Int: String]
        var reference: ObjectRef
        struct Nested: Codable, Equatable { var ok: Bool; var small: UInt8; var big: UInt64 }
    }

    enum Shape: Codable, Equatable {
        case circle(radius: Double)
        case square(Int)
        case none
    }

    let job = Job(
        id: -5, name: "résumé", weight: 0.25, tags: ["a", "b"], payload: [0, 1, 255], owner: nil,
        nested: .init(ok: true, small: 200, big: .max), byNumber: [1: "one", 2: "two"],
        reference: ObjectRef(type: .dict, id: 9))

    @Test func structsBecomeMapsAndComeBack() throws {
        let value = try WireValueEncoder().encode(job)
        #expect(value["name"] == "résumé")
        #expect(value["payload"] == .bytes([0, 1, 255]))
        #expect(value["owner"] == nil)  // nil optionals are left out, as Codable does
        #expect(value["reference"] == .objectRef(ObjectRef(type: .dict, id: 9)))
        #expect(value["nested"]?["big"] == .uint(.max))
        #expect(try WireValueDecoder().decode(Job.self, from: value) == job)
        // Through bytes too.
        let decoded = try WireValue(messagePack: value.encoded().readableBytesView)
        #expect(try WireValueDecoder().decode(Job.self, from: decoded) == job)
    }

    @Test func enumsArraysAndScalars() throws {
        let shapes: [Shape] = [.circle(radius: 2), .square(3), .none]
        let value = try WireValueEncoder().encode(shapes)
        #expect(try WireValueDecoder().decode([Shape].self, from: value) == shapes)
        #expect(try WireValueEncoder().encode(42) == 42)
        #expect(try WireValueEncoder().encode("x") == "x")
        #expect(try WireValueEncoder().encode([1, 2]) == [1, 2])
        #expect(try WireValueEncoder().encode(Optional<Int>.none) == nil)
        #expect(try WireValueDecoder().decode(Int?.self, from: .null) == nil)
        #expect(try WireValueDecoder().decode(Double.self, from: 3) == 3.0)
        #expect(try WireValueDecoder().decode(WireValue.self, from: ["a": 1]) == ["a": 1])
    }

    @Test func scalarsEncodeAndDecodeAlikeAtTheTopAndInsideContainers() throws {
        // The top level takes a shortcut for scalars; it must agree with the containers' path.
        struct Box<T: Codable & Equatable>: Codable, Equatable { var value: T }
        func check<T: Codable & Equatable>(_ value: T) throws {
            let top = try WireValueEncoder().encode(value)
            #expect(try WireValueEncoder().encode(Box(value: value)) == ["value": top])
            #expect(try WireValueEncoder().encode([value]) == [top])
            #expect(try WireValueDecoder().decode(T.self, from: top) == value)
            #expect(try WireValueDecoder().decode(Box<T>.self, from: ["value": top]) == Box(value: value))
        }
        try check("text")
        try check(-7)
        try check(Int.max)
        try check(true)
        try check(2.5)
        try check(Optional("maybe"))
        #expect(try WireValueDecoder().decode(Int.self, from: 2.0) == 2)
        #expect(throws: DecodingError.self) { try WireValueDecoder().decode(String.self, from: 5) }
        #expect(throws: DecodingError.self) { try WireValueDecoder().decode(Bool.self, from: 1) }
    }

    @Test func mismatchesAreDecodingErrorsWithThePath() throws {
        #expect(throws: DecodingError.self) { try WireValueDecoder().decode(Int.self, from: "five") }
        #expect(throws: DecodingError.self) { try WireValueDecoder().decode(UInt8.self, from: 300) }
        #expect(throws: DecodingError.self) { try WireValueDecoder().decode(Int.self, from: .uint(.max)) }
        var broken = try WireValueEncoder().encode(job)
        if case .map(var pairs) = broken {
            pairs.removeAll { $0.key == "name" }
            broken = .map(pairs)
        }
        do {
            _ = try WireValueDecoder().decode(Job.self, from: broken)
            Issue.record("a missing key was accepted")
        } catch DecodingError.keyNotFound(let key, _) {
            #expect(key.stringValue == "name")
        }
    }
}

@Suite struct RequestTests {
    @Test func requestsRoundTrip() throws {
        let requests: [Request] = [
            .new(type: .dict, name: "config", options: [:]),
            .new(type: .queue, name: nil, options: ["maxsize": 10]),
            .call(object: 5, method: "setitem", arguments: ["k", 1]),
            .release(object: 5, seen: nil), .release(object: 5, seen: 3),
            .delete(name: "config"),
            .batch([.call(object: 1, method: "len", arguments: []), .status]),
            .status,
        ]
        for request in requests {
            let decoded = try WireValue(messagePack: request.wireValue.encoded().readableBytesView)
            #expect(try Request(wireValue: decoded) == request)
            #expect(try Request(body: request.wireValue.encoded()) == request)
        }
    }

    @Test func writingARequestGivesTheBytesOfItsValue() {
        let long = WireValue.string(String(repeating: "v", count: 3_000))
        let requests: [Request] = [
            .call(object: 5, method: "setitem", arguments: ["k", 1]), .call(object: 1 << 40, method: "extend", arguments: [[long, long]]),
            .call(object: 0, method: "len", arguments: []), .release(object: 5, seen: 2), .status,
        ]
        for request in requests {
            for maxFrameBody in [64, 1 << 20] {
                var direct = ByteBuffer()
                direct.writeRequest(request, requestID: 9, maxFrameBody: maxFrameBody)
                var general = ByteBuffer()
                general.writeMessage(kind: .request, requestID: 9, value: request.wireValue, maxFrameBody: maxFrameBody)
                #expect(direct == general, "\(request) in frames of \(maxFrameBody)")
            }
        }
    }

    @Test func readingABodyGivesWhatDecodingItGives() throws {
        // The shortcut for calls must agree with the general path, errors included.
        let bodies: [WireValue] = [
            ["call", 7, "getitem", ["key"]], ["call", 7, "append", [["nested", [1, 2.5]], nil]],
            ["call", -1, "len", []], ["call", 1, "len"], ["call", 1, 2, []], ["call", 1, "len", "x"],
            ["call", 1, "len", [], "extra"], ["call"], ["cal", 1, "len", []], ["status"],
        ]
        for body in bodies {
            func outcome(_ read: () throws -> Request) -> String {
                do { return "\(try read())" } catch { return "error: \(error)" }
            }
            #expect(outcome { try Request(wireValue: body) } == outcome { try Request(body: body.encoded()) }, "\(body)")
        }
        let call: WireValue = ["call", 1, "len", []]
        var trailing = call.encoded()
        trailing.writeInteger(UInt8(0xc0))
        #expect(throws: WireFormatError.self) { try Request(body: trailing) }
    }

    @Test func malformedRequestsAreBadRequestsReadyToSend() {
        let cases: [(WireValue, ErrorCode)] = [
            ("call", .badRequest), ([], .badRequest), (["frobnicate"], .unsupported),
            (["new", "teapot", nil, [:]], .unsupported), (["new", "dict", 5, [:]], .badRequest),
            (["call", -1, "len", []], .badRequest), (["call", 1, "len"], .badRequest),
            (["batch", [["batch", []]]], .badRequest), (["release"], .badRequest), (["release", 1, -2], .badRequest), (["release", 1, 2, 3], .badRequest),
            (["status", 1], .badRequest),
        ]
        for (value, code) in cases {
            do {
                _ = try Request(wireValue: value)
                Issue.record("accepted \(value)")
            } catch {
                #expect(error.code == code, "\(value): \(error)")
                #expect(!error.message.isEmpty)
            }
        }
    }

    @Test func errorsAndBatchOutcomesRoundTrip() throws {
        let error = RemoteError(.keyError, "KeyError: 'x'", detail: "x")
        #expect(try RemoteError(wireValue: error.wireValue) == error)
        #expect(try RemoteError(wireValue: error.frame(requestID: 3).value()) == error)
        #expect(throws: WireFormatError.self) { try RemoteError(wireValue: [1, 2]) }
        for outcome in [BatchOutcome.success(5), .failure(error)] {
            #expect(try BatchOutcome(wireValue: outcome.wireValue) == outcome)
        }
        #expect(Set(ErrorCode.all.map(\.rawValue)).count == ErrorCode.all.count)
        #expect(ErrorCode.empty.pythonName == "queue.Empty")
    }
}

@Suite struct CallTests {
    @Test func typedCallsBuildRequestsAndDecodeAnswers() throws {
        let get = DictCall.getItem("k")
        #expect(get.request(object: 3) == .call(object: 3, method: "getitem", arguments: ["k"]))
        #expect(try get.decode(5) == 5)
        #expect(try DictCall.len().decode(2) == 2)
        #expect(throws: WireFormatError.self) { try DictCall.len().decode("two") }
        #expect(try DictCall.items().decode([["a", 1]]) == [WirePair("a", 1)])
        let page = try DictCall.page(cursor: nil, count: 10).decode([7, [["a", 1]]])
        #expect(page.cursor == 7 && page.items == [WirePair("a", 1)])
        #expect(try DictCall.page(cursor: 7, count: 10).decode([nil, []]).cursor == nil)
        #expect(DictCall.pop("k").arguments == ["k"])
        #expect(DictCall.pop("k", default: 0).arguments == ["k", 0])
        #expect(QueueCall.get(timeout: 1.5).arguments == [true, 1.5])
        #expect(QueueCall.get().arguments == [true, nil])
        let grant = LockGrant(acquired: true, fencingToken: 12, previousOwnerDied: true)
        #expect(try LockCall.acquire(owner: 1).decode(grant.wireValue) == grant)
        #expect(try BarrierCall.wait().decode(["index": 2]) == 2)
        #expect(BarrierCall.actionDone().arguments == [true] && BarrierCall.actionDone(failure: "boom").arguments == [false, "boom"])
        #expect(try ValueCall.getLock().decode(.objectRef(ObjectRef(type: .rlock, id: 4))) == ObjectRef(type: .rlock, id: 4))
        #expect(ListCall.getSlice(1, nil).arguments == [1, nil, nil])
    }

    @Test func everyTypedCallIsInTheCatalog() {
        let calls: [(ObjectType, String)] = [
            (.dict, DictCall.getItem(1).method), (.dict, DictCall.page(cursor: nil, count: 1).method),
            (.dict, DictCall.increment(1, by: 1).method), (.dict, DictCall.compareAndSet(1, expected: nil, new: 1).method),
            (.list, ListCall.setSlice(0, 1, [1]).method), (.list, ListCall.sort().method), (.namespace, NamespaceCall.attributes().method),
            (.value, ValueCall.getLock().method), (.array, ArrayCall.increment(0, by: 1).method),
            (.priorityQueue, QueueCall.getMany(max: 1).method), (.joinableQueue, QueueCall.taskDone().method),
            (.rlock, LockCall.locked().method), (.boundedSemaphore, LockCall.value().method),
            (.condition, ConditionCall.notifyAll(owner: 1).method), (.event, EventCall.isSet().method),
            (.barrier, BarrierCall.actionDone().method), (.barrier, BarrierCall.awaitAction().method),
        ]
        for (type, method) in calls {
            #expect(MethodCatalog.find(type, method) != nil, "\(type).\(method)")
        }
    }

    @Test func specListsEveryCatalogMethod() throws {
        let spec = try String(contentsOf: repositoryRoot.appendingPathComponent("Protocol/SPEC.md"), encoding: .utf8)
        for method in MethodCatalog.all {
            #expect(spec.contains("| \(method.type.name) | `\(method.name)` |"), "SPEC.md lacks a row for \(method.type.name).\(method.name)")
        }
        for code in ErrorCode.all {
            #expect(spec.contains("| \(code.rawValue) | \(code.name) |"), "SPEC.md lacks error code \(code.name)")
        }
        for kind in FrameKind.all {
            #expect(spec.contains("| 0x\(String(format: "%02x", kind.rawValue)) | \(kind) |"), "SPEC.md lacks frame kind \(kind)")
        }
    }
}

@Suite struct PoolMessageTests {
    @Test func poolMessagesRoundTripThroughFrames() throws {
        let hello = WorkerHello(node: "n1", capacity: 4, tasks: ["square", "cube"], pid: 42)
        #expect(try WorkerHello(frame: hello.frame()) == hello)
        let assignment = TaskAssignment(task: "square", calls: [1, 2, 3], attempt: 2)
        #expect(try TaskAssignment(frame: assignment.frame(requestID: 9)) == assignment)
        #expect(assignment.arguments(1) == .single(2))
        let starred = TaskAssignment(task: "add", calls: [[1, 2], [3, 4]], starred: true, attempt: 1)
        #expect(try TaskAssignment(frame: starred.frame(requestID: 9)) == starred)
        #expect(starred.arguments(1) == .list([3, 4]))
        let result = TaskResult(results: [1, 4, 9])
        #expect(try TaskResult(frame: result.frame(requestID: 9)) == result)
        let failure = TaskFailure(index: 1, results: [1], errorType: "DivisionByZero", message: "no")
        #expect(try TaskFailure(frame: failure.frame(requestID: 9)) == failure)
        let heartbeat = Heartbeat(busy: 1, capacity: 4)
        #expect(try Heartbeat(frame: heartbeat.frame()) == heartbeat)
        let drain = Drain(reason: "shutting down")
        #expect(try Drain(frame: drain.frame()) == drain)
    }

    @Test func poolMethodHasOneCaseForEveryCatalogRow() {
        let rows = MethodCatalog.all.filter { $0.type == .pool }
        #expect(Set(rows.map(\.name)) == Set(PoolMethod.allCases.map(\.rawValue)))
        #expect(rows.count == PoolMethod.allCases.count)
    }

    @Test func optionalPoolFieldsHaveDefaultsAndRoundTrip() throws {
        let old = try WorkerHello(wireValue: ["node": "n", "capacity": 3, "tasks": ["echo"], "pid": 1])
        #expect(old.pool == "default")
        #expect(old.processes == 3)
        #expect(old.heartbeatSeconds == 5)
        let hello = WorkerHello(node: "n", capacity: 8, tasks: [], pid: 1, pool: "gpu", processes: 4, heartbeatSeconds: 0.5)
        #expect(try WorkerHello(frame: hello.frame()) == hello)
        let lost = TaskFailure(index: 0, results: [], errorType: "WorkerProcessDied", message: "signal 9", lost: true)
        #expect(try TaskFailure(frame: lost.frame(requestID: 3)) == lost)
        #expect(try TaskFailure(wireValue: ["index": 0, "results": [], "type": "E", "message": "m"]).lost == false)
        #expect(throws: WireFormatError.self) {
            try WorkerHello(wireValue: ["node": "n", "capacity": 1, "tasks": [], "pid": 1, "heartbeat": -1])
        }
    }

    @Test func malformedPoolMessagesAreRejected() {
        #expect(throws: WireFormatError.self) { try WorkerHello(frame: Heartbeat(busy: 0, capacity: 1).frame()) }
        #expect(throws: WireFormatError.self) { try WorkerHello(wireValue: ["node": "n", "capacity": 0, "tasks": [], "pid": 1]) }
        #expect(throws: WireFormatError.self) { try WorkerHello(wireValue: ["node": "n", "capacity": 1, "tasks": [1], "pid": 1]) }
        #expect(throws: WireFormatError.self) { try TaskAssignment(wireValue: ["task": "t", "calls": [1], "attempt": 1]) }  // starred by default
        #expect(throws: WireFormatError.self) { try TaskAssignment(wireValue: ["task": "t", "calls": 1, "starred": false, "attempt": 1]) }
        #expect(throws: WireFormatError.self) { try TaskResult(wireValue: [:]) }
    }
}
