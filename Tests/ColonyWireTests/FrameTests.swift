import ColonyWire
import Foundation
import NIOCore
import NIOTestUtils
import Testing

@Suite struct FrameVectorTests {
    private var vectors: [String: Any] { get throws { try loadJSON("Protocol/vectors/frames.json") as! [String: Any] } }

    @Test func framesEncodeAndDecodeAsTheVectorsSay() throws {
        for vector in try vectors["frames"] as! [[String: Any]] {
            let name = vector["name"] as! String
            let frame = Frame(
                kind: FrameKind(rawValue: UInt8(vector["kind"] as! Int)),
                flags: FrameFlags(rawValue: UInt8(vector["flags"] as! Int)),
                requestID: (vector["request_id"] as! NSNumber).uint64Value,
                body: ByteBuffer(bytes: bytes(hex: vector["body"] as! String)))
            var written = ByteBuffer()
            written.writeFrame(frame)
            #expect(hex(written) == vector["hex"] as! String, "encoding \(name)")
            var input = ByteBuffer(bytes: bytes(hex: vector["hex"] as! String))
            let decoded = try input.readFrame(maxBodySize: Frame.defaultMaxBodySize)
            #expect(decoded == frame, "decoding \(name)")
            #expect(input.readableBytes == 0)
            if let tagged = vector["value"] {
                let value = try wireValue(tagged: tagged)
                #expect(try decoded?.value() == value, "body of \(name)")
                var direct = ByteBuffer()
                direct.writeFrame(kind: frame.kind, flags: frame.flags, requestID: frame.requestID, value: value)
                #expect(hex(direct) == vector["hex"] as! String, "in-place encoding of \(name)")
            }
        }
    }

    @Test func chunkedMessageMatchesTheVectorAndReassembles() throws {
        let chunked = try vectors["chunked"] as! [String: Any]
        let body = ByteBuffer(bytes: bytes(hex: chunked["body"] as! String))
        let message = Message(kind: .response, requestID: 77, body: body)
        let frames = message.frames(maxBodySize: chunked["max_body"] as! Int)
        let expected = chunked["frames"] as! [String]
        #expect(frames.count == expected.count)
        var assembler = MessageAssembler()
        var completed: [Message] = []
        for (frame, expectedHex) in zip(frames, expected) {
            var written = ByteBuffer()
            written.writeFrame(frame)
            #expect(hex(written) == expectedHex)
            if let done = try assembler.receive(frame) { completed.append(done) }
        }
        #expect(completed == [message])
        #expect(assembler.bufferedBytes == 0)
    }

    @Test func invalidHeadersAreRejectedBeforeTheBodyArrives() throws {
        for vector in try vectors["invalid"] as! [[String: Any]] {
            var input = ByteBuffer(bytes: bytes(hex: vector["hex"] as! String))
            do {
                _ = try input.readFrame(maxBodySize: vector["max_body"] as! Int)
                Issue.record("\(vector["name"]!) was accepted")
            } catch let error as FrameError {
                #expect("\(error.code)" == vector["error"] as! String)
                #expect(input.readableBytes == Frame.headerSize)  // nothing consumed
            }
        }
    }
}

@Suite struct FrameDecoderTests {
    private func frames() -> [Frame] {
        [
            Frame(kind: .request, requestID: 1, value: ["call", 5, "getitem", ["k"]]),
            Frame(kind: .ping, requestID: 0),
            Frame(kind: .response, flags: .more, requestID: 2, body: ByteBuffer(bytes: Array(repeating: 7, count: 300))),
            Frame(kind: .response, requestID: 2, body: ByteBuffer(bytes: [1, 2, 3])),
            Frame(kind: .error, requestID: .max, value: RemoteError(.keyError, "missing").wireValue),
        ]
    }

    @Test func decoderPassesTheVerifier() throws {
        let pairs = frames().map { frame -> (ByteBuffer, [Frame]) in
            var buffer = ByteBuffer()
            buffer.writeFrame(frame)
            return (buffer, [frame])
        }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { FrameDecoder() }
    }

    @Test func incompleteFramesWaitForMoreBytes() throws {
        var all = ByteBuffer()
        for frame in frames() { all.writeFrame(frame) }
        for cut in 0..<all.readableBytes {
            var decoder = FrameDecoder()
            var partial = all.getSlice(at: 0, length: cut)!
            var decoded = 0
            while let _ = try decoder.decode(buffer: &partial) { decoded += 1 }
            #expect(decoded < frames().count)
        }
    }

    @Test func oversizedFrameIsAnErrorNamingTheRequest() {
        var buffer = ByteBuffer()
        buffer.writeFrame(Frame(kind: .request, requestID: 41, body: ByteBuffer(bytes: Array(repeating: 0, count: 100))))
        var decoder = FrameDecoder(maxBodySize: 99)
        do {
            _ = try decoder.decode(buffer: &buffer)
            Issue.record("an oversized frame was accepted")
        } catch let error as FrameError {
            #expect(error.code == .tooLarge)
            #expect(error.requestID == 41)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func endOfStreamInsideAFrameIsReported() throws {
        var buffer = ByteBuffer()
        buffer.writeFrame(Frame(kind: .ping))
        var partial = buffer.getSlice(at: 0, length: 10)!
        var decoder = FrameDecoder()
        #expect(throws: FrameError.self) { try decoder.decodeLast(buffer: &partial, seenEOF: true) }
    }

    @Test func bodyWithTrailingBytesIsMalformed() {
        var body = WireValue.int(1).encoded()
        body.writeInteger(UInt8(0xc0))
        #expect(throws: WireFormatError.self) { try Frame(kind: .response, body: body).value() }
    }

    @Test func assemblerEnforcesItsLimits() throws {
        var assembler = MessageAssembler(maxMessageSize: 10, maxBufferedBytes: 12)
        let chunk = ByteBuffer(bytes: Array(repeating: 1, count: 6))
        #expect(try assembler.receive(Frame(kind: .request, flags: .more, requestID: 1, body: chunk)) == nil)
        #expect(throws: FrameError.self) { try assembler.receive(Frame(kind: .request, requestID: 1, body: chunk)) }
        #expect(assembler.bufferedBytes == 0)
        #expect(try assembler.receive(Frame(kind: .request, flags: .more, requestID: 2, body: chunk)) == nil)
        #expect(try assembler.receive(Frame(kind: .request, flags: .more, requestID: 3, body: chunk)) == nil)
        #expect(throws: FrameError.self) { try assembler.receive(Frame(kind: .request, flags: .more, requestID: 4, body: chunk)) }
        assembler.discard(kind: .request, requestID: 2)
        assembler.discard(kind: .request, requestID: 3)
        #expect(assembler.bufferedBytes == 0)
    }

    @Test func interleavedChunksOfTwoRequests() throws {
        var assembler = MessageAssembler()
        let a = Message(kind: .request, requestID: 1, body: ByteBuffer(bytes: Array(0..<50)))
        let b = Message(kind: .request, requestID: 2, body: ByteBuffer(bytes: Array(100..<180)))
        let framesA = a.frames(maxBodySize: 16), framesB = b.frames(maxBodySize: 16)
        var done: [Message] = []
        for index in 0..<max(framesA.count, framesB.count) {
            for frames in [framesA, framesB] where index < frames.count {
                if let message = try assembler.receive(frames[index]) { done.append(message) }
            }
        }
        #expect(Set(done) == [a, b])
    }
}

@Suite struct FrameStreamTests {
    private func stream(of frames: [Frame]) -> ByteBuffer {
        var bytes = ByteBuffer()
        for frame in frames { bytes.writeFrame(frame) }
        return bytes
    }

    private let frames = (1...5).map { Frame(kind: .request, requestID: UInt64($0), body: ByteBuffer(bytes: Array(repeating: UInt8($0), count: 40 * $0))) }

    @Test func framesSplitAtEveryByteArriveWholeAndInOrder() throws {
        let whole = stream(of: frames)
        for cut in [1, 7, 16, 17, 53, whole.readableBytes - 1] {
            var reader = FrameStream()
            var seen: [Frame] = []
            var rest = whole
            while rest.readableBytes > 0 {
                let piece = rest.readSlice(length: min(cut, rest.readableBytes))!
                try reader.receive(piece, maxBodySize: 1024) { seen.append($0); return true }
            }
            #expect(seen == frames, "reads of \(cut) bytes")
            #expect(reader.heldBytes == 0)
        }
    }

    @Test func anUnfinishedFrameWaitsForItsLastBytes() throws {
        var whole = stream(of: frames)
        let first = whole.readSlice(length: whole.readableBytes - 10)!
        var reader = FrameStream()
        var count = 0
        try reader.receive(first, maxBodySize: 1024) { _ in count += 1; return true }
        #expect(count == 4)
        #expect(reader.heldBytes == Frame.headerSize + 200 - 10)
        try reader.receive(whole, maxBodySize: 1024) { frame in
            #expect(frame == frames[4])
            count += 1
            return true
        }
        #expect(count == 5)
    }

    @Test func pausesWhenTheHandlerSaysSoAndRejectsOversizedFrames() throws {
        var reader = FrameStream()
        var count = 0
        try reader.receive(stream(of: frames), maxBodySize: 1024) { _ in count += 1; return count < 2 }
        #expect(count == 2)
        // The rest waits, with what arrives meanwhile, until the next receive.
        var more = stream(of: frames)
        let firstHalf = more.readSlice(length: 30)!
        reader.hold(firstHalf)
        var later: [Frame] = []
        try reader.receive(ByteBuffer(), maxBodySize: 1024) { later.append($0); return true }
        try reader.receive(more, maxBodySize: 1024) { later.append($0); return true }
        #expect(later == Array(frames[2...]) + frames)
        #expect(reader.heldBytes == 0)
        var oversized = FrameStream()
        #expect(throws: FrameError.self) {
            try oversized.receive(stream(of: frames), maxBodySize: 100) { _ in true }
        }
    }
}
