import ColonyWire
import Foundation
import NIOCore
import Testing

@Suite struct ValueVectorTests {
    @Test func everyValueVectorEncodesAndDecodes() throws {
        let vectors = try loadJSON("Protocol/vectors/values.json") as! [[String: Any]]
        #expect(vectors.count >= 50)
        for vector in vectors {
            let name = vector["name"] as! String
            let expected = bytes(hex: vector["hex"] as! String)
            let value = try wireValue(tagged: vector["value"]!)
            if vector["decode_only"] as? Bool != true {
                #expect(hex(value.encoded()) == hex(expected), "encoding \(name)")
            }
            #expect(try WireValue(messagePack: expected) == value, "decoding \(name)")
        }
    }

    @Test func everyInvalidVectorIsRejectedWithItsError() throws {
        let vectors = try loadJSON("Protocol/vectors/invalid-values.json") as! [[String: Any]]
        for vector in vectors {
            let name = vector["name"] as! String
            do {
                _ = try WireValue(messagePack: bytes(hex: vector["hex"] as! String))
                Issue.record("\(name) was accepted")
            } catch let error as WireFormatError {
                #expect("\(error.code)" == vector["error"] as! String, "\(name): \(error)")
            }
        }
    }
}

@Suite struct MessagePackTests {
    @Test func integersTakeTheirCanonicalCase() throws {
        #expect(WireValue.integer(5 as UInt64) == .int(5))
        #expect(WireValue.integer(UInt64.max) == .uint(.max))
        #expect(try WireValue(messagePack: [0xcc, 0x05]) == .int(5))
        #expect(WireValue.uint(5).encoded() == WireValue.int(5).encoded())
    }

    @Test func randomValuesRoundTrip() throws {
        var rng = SplitMix(seed: 7)
        for _ in 0..<2_000 {
            let value = randomValue(&rng)
            let encoded = value.encoded()
            #expect(try WireValue(messagePack: encoded.readableBytesView) == value)
        }
    }

    @Test func valuesOfEverySizeAppendAfterWhatABufferHolds() throws {
        // Small values are written in the buffer's free space; larger ones outgrow it and are
        // copied in from scratch memory. Either way the bytes equal the canonical encoding.
        for length in [0, 10, 200, 255, 256, 300, 5_000, 70_000] {
            let value = WireValue.array([.string(String(repeating: "x", count: length)), .int(-1), [1, 2]])
            for capacity in [0, 16, 1_024] {
                var buffer = ByteBufferAllocator().buffer(capacity: capacity)
                buffer.writeString("head")
                let written = buffer.writeWireValue(value)
                #expect(buffer.readString(length: 4) == "head")
                #expect(written == buffer.readableBytes)
                #expect(try WireValue(messagePack: buffer.readableBytesView) == value, "length \(length), capacity \(capacity)")
            }
        }
    }

    @Test func incompleteInputLeavesTheBufferUntouched() throws {
        let value: WireValue = ["key": [1, 2, "three", .bytes([1, 2, 3])]]
        let full = value.encoded()
        for cut in 0..<full.readableBytes {
            var partial = full.getSlice(at: 0, length: cut)!
            #expect(throws: WireFormatError.self) { try partial.readWireValue() }
            #expect(partial.readableBytes == cut)
        }
    }

    @Test func limitsAreCheckedBeforeAllocating() throws {
        let limits = WireLimits(maxDepth: 4, maxBlobLength: 10, maxCollectionCount: 3)
        #expect(throws: WireFormatError.self) { try WireValue(messagePack: WireValue.string(String(repeating: "x", count: 11)).encoded().readableBytesView, limits: limits) }
        #expect(throws: WireFormatError.self) { try WireValue(messagePack: WireValue.array([1, 2, 3, 4]).encoded().readableBytesView, limits: limits) }
        #expect(throws: WireFormatError.self) { try WireValue(messagePack: WireValue.array([[[[[1]]]]]).encoded().readableBytesView, limits: limits) }
        #expect(try WireValue(messagePack: WireValue.array([[[[1]]]]).encoded().readableBytesView, limits: limits) == [[[[1]]]])
    }

    @Test func randomBytesNeverCrashTheDecoder() {
        var rng = SplitMix(seed: 99)
        for _ in 0..<20_000 {
            let length = Int.random(in: 0..<64, using: &rng)
            var buffer = ByteBuffer(bytes: (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) })
            _ = try? buffer.readWireValue()
        }
    }

    @Test func accessorsAndLiterals() {
        let value: WireValue = ["name": "colony", "n": 3, "ratio": 0.5, "ok": true, "none": nil, "list": [1]]
        #expect(value["name"]?.stringValue == "colony")
        #expect(value["n"]?.int64Value == 3)
        #expect(value["n"]?.doubleValue == 3)
        #expect(value["ratio"]?.doubleValue == 0.5)
        #expect(value["ok"]?.boolValue == true)
        #expect(value["none"]?.isNull == true)
        #expect(value["list"]?.arrayValue == [1])
        #expect(value["missing"] == nil)
        #expect(WireValue.int(-1).uint64Value == nil)
        #expect(ObjectType(name: "joinable_queue") == .joinableQueue)
        #expect(ObjectType.all.allSatisfy { ObjectType(name: $0.name) == $0 })
    }
}

@Suite struct EncodedValuesTests {
    /// The body of a task-result message whose results array is `array` (any bytes).
    private func resultBody(_ array: [UInt8]) -> ByteBuffer {
        var body = ByteBuffer(bytes: [0x81])
        body.writeWireValue("results")
        body.writeBytes(array)
        return body
    }

    @Test func scanningAcceptsExactlyWhatDecodingAccepts() throws {
        var rng = SplitMix(seed: 5)
        var accepted = 0
        for round in 0..<3_000 {
            // Half well-formed values with a byte changed, half random bytes.
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = Array(WireValue.array([randomValue(&rng), randomValue(&rng)]).encoded().readableBytesView)
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            } else {
                bytes = [0x92] + (0..<Int.random(in: 0..<24, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
            let decoded = Result { try WireValue(messagePack: bytes) }
            let scanned = Result { try TaskResult(body: resultBody(bytes)) }
            switch (decoded, scanned) {
            case (.success(let value), .success(let result)):
                #expect(result.results.values == value.arrayValue, "\(bytes)")
                accepted += 1
            case (.failure(let decodeError as WireFormatError), .failure(let scanError as WireFormatError)):
                if decodeError.code != .malformedMessage {
                    #expect(scanError.code == decodeError.code || scanError.code == .malformedMessage, "\(bytes): \(decodeError) vs \(scanError)")
                }
            case (.success(let value), .failure(let error)):
                // Decoding accepts a non-array; a result must be an array.
                #expect(value.arrayValue == nil, "\(bytes) decodes but was refused: \(error)")
            default:
                Issue.record("\(bytes): decoding \(decoded), scanning \(scanned)")
            }
        }
        #expect(accepted > 150)
    }

    @Test func everyInvalidVectorIsRefusedWhenScannedToo() throws {
        let vectors = try loadJSON("Protocol/vectors/invalid-values.json") as! [[String: Any]]
        for vector in vectors {
            let name = vector["name"] as! String
            do {
                _ = try TaskResult(body: resultBody([0x91] + bytes(hex: vector["hex"] as! String)))
                Issue.record("\(name) was accepted")
            } catch let error as WireFormatError {
                #expect(["\(error.code)", "trailingBytes"].contains(vector["error"] as! String), "\(name): \(error)")
            }
        }
    }

    @Test func valuesAreCopiedRemovedAndSlicedByIndex() throws {
        let values: [WireValue] = [1, "two", [3, 4], nil, ["five": 5.5], .bytes([6]), -7]
        var encoded = EncodedValues(values)
        #expect(encoded.count == values.count)
        #expect(encoded.values == values)
        #expect(encoded[2] == [3, 4])
        #expect(encoded[1..<4].values == Array(values[1..<4]))
        var copy = EncodedValues()
        copy.append(encoded, at: 4)
        copy.append(encoded, in: 0..<2)
        copy.append(.string("end"))
        #expect(copy.values == [values[4], values[0], values[1], "end"])
        encoded.removeFirst(3)
        #expect(encoded.values == Array(values[3...]))
        var buffer = ByteBuffer()
        buffer.writeMap(["first": 1], array: "rest", encoded)
        #expect(try WireValue(messagePack: buffer.readableBytesView) == ["first": 1, "rest": .array(Array(values[3...]))])
    }

    @Test func anAssignmentWrittenFromASliceIsTheAssignmentOfItsValues() throws {
        let values: [WireValue] = [[1], ["two"], [[3, 4]], [nil], [5.5]]
        let encoded = EncodedValues(values)
        for range in [0..<5, 0..<1, 1..<4, 4..<5, 2..<2] {
            let slice = EncodedValues.Slice(encoded, range)
            #expect(slice.count == range.count)
            #expect(slice.values == Array(values[range]))
            #expect(slice == EncodedValues.Slice(EncodedValues(Array(values[range]))), "equal by values, wherever they lie")
            let body = TaskAssignment.body(task: "echo", calls: slice, starred: true, attempt: 2)
            let whole = TaskAssignment(task: "echo", calls: slice.copied, starred: true, attempt: 2)
            #expect(Array(body.readableBytesView) == Array(whole.body.readableBytesView))
            let read = try TaskAssignment(body: body)
            #expect(read.calls.values == Array(values[range]) && read.starred && read.attempt == 2)
        }
        #expect(EncodedValues.Slice(encoded, 0..<2) != EncodedValues.Slice(encoded, 1..<3))
    }

    @Test func scalarsReadFromTheBytesAreWhatDecodingGives() throws {
        // Every width of every integer encoding, at its edges.
        let integers = [0, 127, 128, 255, 256, 65_535, 65_536, 4_294_967_295, 4_294_967_296, Int.max, -1, -32, -33, -128, -129, -32_768]
            + [-32_769, Int(Int32.min), Int(Int32.min) - 1, Int.min]
        #expect(EncodedValues(integers.map { .int(Int64($0)) }).integers() == integers)
        #expect(EncodedValues([1, .uint(UInt64(Int.max) + 1)]).integers() == nil)
        #expect(EncodedValues([1, "one"]).integers() == nil)
        #expect(EncodedValues([]).integers() == [])

        let strings = ["", "a", String(repeating: "b", count: 31), String(repeating: "c", count: 32), String(repeating: "d", count: 300)]
            + [String(repeating: "e", count: 70_000), "héllo, 世界"]
        #expect(EncodedValues(strings.map(WireValue.string)).strings() == strings)
        #expect(EncodedValues(["a", 1]).strings() == nil)

        let doubles = [1.5, -0.0, .infinity, Double.leastNonzeroMagnitude]
        #expect(EncodedValues(doubles.map(WireValue.double)).doubles() == doubles)
        #expect(EncodedValues([1.5, 2]).doubles() == nil)
        // A 32-bit float, which this side never writes but reads.
        var single = ByteBuffer(bytes: [0x91, 0xca])
        single.writeInteger(Float(0.25).bitPattern)
        let scanned = try TaskResult(body: resultBody(Array(single.readableBytesView))).results
        #expect(scanned.doubles() == [0.25])
        #expect(scanned.values == [0.25])
    }

    @Test func aPoolBatchReadFromItsBytesMatchesTheDecodedAnswer() throws {
        let failure = RemoteError(.taskFailed, "boom")
        let answer: WireValue = [false, [1, nil, "three"], 7, 10, [[1, failure.wireValue]]]
        for batch in [try PoolBatch(body: answer.encoded()), try PoolCall.next(job: 1).decode(answer)] {
            #expect(batch.values.values == [1, nil, "three"])
            #expect(batch.failures.map(\.position) == [1] && batch.failures.map(\.error.code) == [.taskFailed])
            #expect(!batch.finished && batch.completed == 7 && batch.total == 10)
        }
        #expect(try PoolCall.next(job: 1).decode(body: answer.encoded()).values.count == 3)
        // Wrong shapes: four fields, a failure outside the values, bytes after the answer.
        let wrong: [ByteBuffer] = [
            WireValue.array([false, [1], 1, nil]).encoded(), WireValue.array([true, [1], 1, nil, [[5, failure.wireValue]]]).encoded(),
            ByteBuffer(bytes: Array(answer.encoded().readableBytesView) + [0xc0]),
        ]
        for body in wrong {
            #expect(throws: (any Error).self) { try PoolBatch(body: body) }
        }
    }

    @Test func aRequestWrittenFromEncodedCallsIsTheCallItStandsFor() throws {
        let calls = EncodedValues(integers: [1, 300, -5, Int.min])
        #expect(calls == EncodedValues([1, 300, -5, .int(Int64.min)]))
        #expect(EncodedValues(integers: 0..<3) == EncodedValues([0, 1, 2]))
        #expect(EncodedValues(strings: ["a", "bc"]) == EncodedValues(["a", "bc"]))
        #expect(EncodedValues(doubles: [0.5]) == EncodedValues([0.5]))
        let job = UInt64(1) << 32 | 1
        let map = PoolCall.mapRequest(pool: 7, task: "echo", calls: calls, chunksize: nil, ordered: true, more: true, total: 9, job: job)
        #expect(try Request(body: map) == PoolCall.map(task: "echo", calls: calls.values, chunksize: nil, ordered: true, more: true, total: 9, job: job).request(object: 7))
        let parsed = try #require(PoolCallsRequest(body: map, limits: .default))
        #expect(parsed.calls == calls && parsed.method == "map" && parsed.object == 7)
        let feed = PoolCall.feedRequest(pool: 7, job: job, calls: calls, last: true)
        #expect(try Request(body: feed) == PoolCall.feed(job: job, calls: calls.values, last: true).request(object: 7))
    }

    @Test func aReferenceIsFoundByWalkingTheValueNotByItsMarkerBytes() {
        // 0xd701 encodes as ce 00 00 d7 01: a reference's marker inside a number.
        #expect(!WireValue.array([.int(0xd701), "x"]).encoded().holdsObjectReference)
        #expect(WireValue.array([1, ["in": .objectRef(ObjectRef(type: .dict, id: 3))]]).encoded().holdsObjectReference)
        #expect(ByteBuffer(bytes: [0x92, 0x01]).holdsObjectReference)  // not a whole value: decoding says why
    }
}
