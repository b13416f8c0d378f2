import NIOCore

/// A whole message: one frame, or the reassembled chunks of one (SPEC.md, "Chunked
/// messages").
public struct Message: Hashable, Sendable {
    public var kind: FrameKind
    public var requestID: UInt64
    public var body: ByteBuffer

    public init(kind: FrameKind, requestID: UInt64, body: ByteBuffer) {
        self.kind = kind
        self.requestID = requestID
        self.body = body
    }

    /// The body decoded as exactly one MessagePack value.
    public func value(limits: WireLimits = .default) throws -> WireValue {
        try Frame(kind: kind, requestID: requestID, body: body).value(limits: limits)
    }

    /// The frames that carry this message when frame bodies may hold at most `maxBodySize`
    /// bytes: one frame if it fits, else chunks flagged `.more` except the last. The chunks
    /// share this message's storage; nothing is copied.
    public func frames(maxBodySize: Int) -> [Frame] {
        precondition(maxBodySize > 0, "frames need room for at least one body byte")
        var body = self.body
        guard body.readableBytes > maxBodySize else {
            return [Frame(kind: kind, requestID: requestID, body: body)]
        }
        var frames: [Frame] = []
        frames.reserveCapacity(body.readableBytes / maxBodySize + 1)
        while body.readableBytes > 0 {
            let length = min(maxBodySize, body.readableBytes)
            let chunk = body.readSlice(length: length)!
            frames.append(Frame(kind: kind, flags: body.readableBytes > 0 ? .more : [], requestID: requestID, body: chunk))
        }
        return frames
    }
}

extension ByteBuffer {
    /// Appends a message whose body is `value`, encoded in place (no buffer of its own), or,
    /// when the body is over `maxFrameBody` bytes, its chunks.
    public mutating func writeMessage(kind: FrameKind, requestID: UInt64, value: WireValue, maxFrameBody: Int) {
        let start = writerIndex
        writeFrame(kind: kind, requestID: requestID, value: value)
        chunkIfNeeded(kind: kind, requestID: requestID, from: start, maxFrameBody: maxFrameBody)
    }

    /// Appends `message`, or, when its body is over `maxFrameBody` bytes, its chunks.
    public mutating func writeMessage(_ message: Message, maxFrameBody: Int) {
        let start = writerIndex
        writeFrame(Frame(kind: message.kind, requestID: message.requestID, body: message.body))
        chunkIfNeeded(kind: message.kind, requestID: message.requestID, from: start, maxFrameBody: maxFrameBody)
    }

    /// Appends a request message (chunked when its body is over `maxFrameBody` bytes); a call
    /// is encoded from its fields.
    public mutating func writeRequest(_ request: Request, requestID: UInt64, maxFrameBody: Int) {
        let start = writerIndex
        writeEncoded { writer in
            writer.frameHeader(kind: .request, flags: [], requestID: requestID)
            writer.write(request)
            writer.patchFrameLength(headerAt: 0)
        }
        chunkIfNeeded(kind: .request, requestID: requestID, from: start, maxFrameBody: maxFrameBody)
    }

    /// Splits the single frame written from `start` into chunks if its body is too large.
    private mutating func chunkIfNeeded(kind: FrameKind, requestID: UInt64, from start: Int, maxFrameBody: Int) {
        guard writerIndex - start - Frame.headerSize > maxFrameBody else { return }
        let body = getSlice(at: start + Frame.headerSize, length: writerIndex - start - Frame.headerSize)!
        moveWriterIndex(to: start)
        for frame in Message(kind: kind, requestID: requestID, body: body).frames(maxBodySize: maxFrameBody) {
            writeFrame(frame)
        }
    }
}

/// Memory that partial messages of all of a receiver's connections share (a manager's
/// memory budget): each assembler takes what it buffers and gives it back.
public protocol PartialMessageBudget: Sendable {
    /// Takes `bytes` more for partial messages; false when there is no room.
    func reservePartial(_ bytes: Int) -> Bool
    func releasePartial(_ bytes: Int)
}

/// Reassembles chunked messages from frames, for one connection. Chunks of different
/// requests may interleave; chunks of one message arrive in order.
///
/// `maxMessageSize` bounds one reassembled message and `maxBufferedBytes` all partial
/// messages together, so a peer cannot make the receiver hold unbounded memory.
public struct MessageAssembler: Sendable {
    public let maxMessageSize: Int
    public let maxBufferedBytes: Int

    private struct Key: Hashable {
        var kind: FrameKind
        var requestID: UInt64
    }

    private var partial: [Key: ByteBuffer] = [:]
    private(set) public var bufferedBytes = 0
    private let budget: (any PartialMessageBudget)?

    public init(maxMessageSize: Int = 1 << 32, maxBufferedBytes: Int = 1 << 32, budget: (any PartialMessageBudget)? = nil) {
        self.maxMessageSize = maxMessageSize
        self.maxBufferedBytes = maxBufferedBytes
        self.budget = budget
    }

    /// Feeds one frame; returns the message it completes, if any.
    public mutating func receive(_ frame: Frame) throws -> Message? {
        if partial.isEmpty && !frame.flags.contains(.more) {
            // The usual case, a whole message in one frame: no table lookup.
            return Message(kind: frame.kind, requestID: frame.requestID, body: frame.body)
        }
        let key = Key(kind: frame.kind, requestID: frame.requestID)
        guard var buffer = partial.removeValue(forKey: key) else {
            if !frame.flags.contains(.more) {
                return Message(kind: frame.kind, requestID: frame.requestID, body: frame.body)
            }
            try admit(frame.body.readableBytes, total: frame.body.readableBytes, frame)
            partial[key] = frame.body
            return nil
        }
        let total = buffer.readableBytes + frame.body.readableBytes
        do {
            try admit(frame.body.readableBytes, total: total, frame)
        } catch {
            forget(buffer.readableBytes)
            throw error
        }
        var chunk = frame.body
        buffer.writeBuffer(&chunk)
        if frame.flags.contains(.more) {
            partial[key] = buffer
            return nil
        }
        forget(total)
        return Message(kind: frame.kind, requestID: frame.requestID, body: buffer)
    }

    /// Forgets a partial message, for example when its request was cancelled.
    public mutating func discard(kind: FrameKind, requestID: UInt64) {
        if let buffer = partial.removeValue(forKey: Key(kind: kind, requestID: requestID)) {
            forget(buffer.readableBytes)
        }
    }

    /// Forgets every partial message (the connection ended), giving their bytes back.
    public mutating func discardAll() {
        partial = [:]
        forget(bufferedBytes)
    }

    private mutating func forget(_ bytes: Int) {
        bufferedBytes -= bytes
        budget?.releasePartial(bytes)
    }

    private mutating func admit(_ added: Int, total: Int, _ frame: Frame) throws {
        guard total <= maxMessageSize else {
            throw FrameError(.tooLarge, "a chunked \(frame.kind) message grows past \(maxMessageSize) bytes", requestID: frame.requestID)
        }
        guard bufferedBytes + added <= maxBufferedBytes else {
            throw FrameError(
                .tooLarge, "partial messages would hold more than \(maxBufferedBytes) bytes", requestID: frame.requestID)
        }
        guard budget?.reservePartial(added) ?? true else {
            throw FrameError(
                .overBudget, "the receiver's memory budget has no room for \(added) more bytes of partial messages; send smaller messages or try later",
                requestID: frame.requestID)
        }
        bufferedBytes += added
    }
}
