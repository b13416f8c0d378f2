import NIOCore

/// What a frame carries (SPEC.md, "Frame kinds").
public struct FrameKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    // Handshake
    public static let hello = FrameKind(rawValue: 0x01)
    public static let challenge = FrameKind(rawValue: 0x02)
    public static let proof = FrameKind(rawValue: 0x03)
    public static let welcome = FrameKind(rawValue: 0x04)
    // Session
    public static let request = FrameKind(rawValue: 0x10)
    public static let response = FrameKind(rawValue: 0x11)
    public static let error = FrameKind(rawValue: 0x12)
    public static let cancel = FrameKind(rawValue: 0x13)
    public static let ping = FrameKind(rawValue: 0x14)
    public static let pong = FrameKind(rawValue: 0x15)
    public static let goodbye = FrameKind(rawValue: 0x16)
    // Worker nodes of the distributed pool
    public static let workerHello = FrameKind(rawValue: 0x20)
    public static let taskAssign = FrameKind(rawValue: 0x21)
    public static let taskResult = FrameKind(rawValue: 0x22)
    public static let taskFailure = FrameKind(rawValue: 0x23)
    public static let heartbeat = FrameKind(rawValue: 0x24)
    public static let drain = FrameKind(rawValue: 0x25)

    public static let all: [FrameKind] = [
        .hello, .challenge, .proof, .welcome, .request, .response, .error, .cancel, .ping, .pong, .goodbye,
        .workerHello, .taskAssign, .taskResult, .taskFailure, .heartbeat, .drain,
    ]

    public var isKnown: Bool { FrameKind.all.contains(self) }

    public var description: String {
        switch self {
        case .hello: "hello"
        case .challenge: "challenge"
        case .proof: "proof"
        case .welcome: "welcome"
        case .request: "request"
        case .response: "response"
        case .error: "error"
        case .cancel: "cancel"
        case .ping: "ping"
        case .pong: "pong"
        case .goodbye: "goodbye"
        case .workerHello: "worker-hello"
        case .taskAssign: "task-assign"
        case .taskResult: "task-result"
        case .taskFailure: "task-failure"
        case .heartbeat: "heartbeat"
        case .drain: "drain"
        default: "kind-0x\(String(rawValue, radix: 16))"
        }
    }
}

/// Frame flags (SPEC.md, "Frame header"). Undefined bits must be zero.
public struct FrameFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// More chunks of the same message (same kind and request id) follow this frame.
    public static let more = FrameFlags(rawValue: 0x01)

    public static let defined: FrameFlags = [.more]
}

/// One frame: a 16-byte header and a body of at most the negotiated maximum size.
///
///     0       4    5     6        8                16
///     +-------+----+-----+--------+----------------+-----------
///     |length |kind|flags|reserved|   request id   | body ...
///     +-------+----+-----+--------+----------------+-----------
///     length: body bytes, UInt32 big-endian; reserved: 0; request id: UInt64 big-endian
public struct Frame: Hashable, Sendable, CustomStringConvertible {
    public static let headerSize = 16
    /// The default and suggested maximum body size: 1 MiB. Larger messages are chunked.
    public static let defaultMaxBodySize = 1 << 20

    public var kind: FrameKind
    public var flags: FrameFlags
    public var requestID: UInt64
    public var body: ByteBuffer

    public init(kind: FrameKind, flags: FrameFlags = [], requestID: UInt64 = 0, body: ByteBuffer = ByteBuffer()) {
        self.kind = kind
        self.flags = flags
        self.requestID = requestID
        self.body = body
    }

    /// A frame whose body is one MessagePack value.
    public init(kind: FrameKind, requestID: UInt64 = 0, value: WireValue) {
        self.init(kind: kind, requestID: requestID, body: value.encoded())
    }

    /// The body decoded as exactly one MessagePack value.
    public func value(limits: WireLimits = .default) throws -> WireValue {
        var body = self.body
        let value = try body.readWireValue(limits: limits)
        if body.readableBytes > 0 {
            throw WireFormatError(.trailingBytes, "\(body.readableBytes) bytes follow the body's value in a \(kind) frame")
        }
        return value
    }

    public var description: String {
        "\(kind) #\(requestID)\(flags.contains(.more) ? " +more" : "") (\(body.readableBytes) bytes)"
    }
}

/// A byte stream that is not a valid sequence of frames. The connection cannot continue:
/// send the error frame `errorFrame` if you can, then close.
public struct FrameError: Error, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        /// The header announces a body larger than the receiver's maximum.
        public static let tooLarge = Code("tooLarge")
        /// Reserved header bits or undefined flags are set.
        public static let malformedHeader = Code("malformedHeader")
        /// The stream ended inside a frame.
        public static let truncated = Code("truncated")
        /// Buffering the chunk would exceed the receiver's memory budget.
        public static let overBudget = Code("overBudget")
        public var description: String { name }
    }

    public let code: Code
    public let message: String
    /// The request id of the offending frame, when known.
    public let requestID: UInt64

    public init(_ code: Code, _ message: String, requestID: UInt64 = 0) {
        self.code = code
        self.message = message
        self.requestID = requestID
    }

    public var description: String { "\(code): \(message)" }
}

extension ByteBuffer {
    /// Appends a frame header and body.
    @discardableResult
    public mutating func writeFrame(_ frame: Frame) -> Int {
        precondition(frame.body.readableBytes <= Int(UInt32.max), "frame bodies are at most 4 GiB; chunk larger messages")
        var written = writeMultipleIntegers(
            UInt32(frame.body.readableBytes), frame.kind.rawValue, frame.flags.rawValue, UInt16(0), frame.requestID)
        var body = frame.body
        written += writeBuffer(&body)
        return written
    }

    /// Appends a frame whose body is `value`, encoding it in place (no intermediate buffer).
    @discardableResult
    public mutating func writeFrame(kind: FrameKind, flags: FrameFlags = [], requestID: UInt64, value: WireValue) -> Int {
        writeEncoded { writer in
            writer.frameHeader(kind: kind, flags: flags, requestID: requestID)
            writer.write(value)
            writer.patchFrameLength(headerAt: 0)
        }
    }

    /// Reads one frame if a whole one is buffered; returns nil (consuming nothing) if not.
    /// The header is checked, including the size limit, before any body byte is awaited.
    public mutating func readFrame(maxBodySize: Int) throws -> Frame? {
        guard readableBytes >= Frame.headerSize else { return nil }
        let (rawLength, rawKind, rawFlags, reserved, requestID) = getMultipleIntegers(
            at: readerIndex, as: (UInt32, UInt8, UInt8, UInt16, UInt64).self)!
        let length = Int(rawLength)
        let kind = FrameKind(rawValue: rawKind)
        let flags = FrameFlags(rawValue: rawFlags)
        guard length <= maxBodySize else {
            throw FrameError(
                .tooLarge, "a \(kind) frame announces \(length) body bytes; the limit is \(maxBodySize)",
                requestID: requestID)
        }
        guard reserved == 0, flags.isSubset(of: .defined) else {
            throw FrameError(
                .malformedHeader,
                "reserved header bits are set (reserved 0x\(String(reserved, radix: 16)), flags 0x\(String(flags.rawValue, radix: 16)))",
                requestID: requestID)
        }
        guard readableBytes >= Frame.headerSize + length else { return nil }
        moveReaderIndex(forwardBy: Frame.headerSize)
        let body = readSlice(length: length)!
        return Frame(kind: kind, flags: flags, requestID: requestID, body: body)
    }
}

/// Splits a stream of reads into frames without keeping the buffers the reads arrive in.
///
/// NIOSSL hands each read over as a view of one plaintext buffer it reuses; a handler that
/// keeps that view past `channelRead` makes NIOSSL copy its whole buffer (32 KiB) on the next
/// read. This keeps only an unfinished frame's bytes, copied into storage of its own.
public struct FrameStream {
    private var unfinished: ByteBuffer?

    public init() {}

    /// Calls `handle` with each whole frame of `incoming` (after any bytes held from earlier
    /// reads) and keeps the bytes of an unfinished frame for the next read. When `handle`
    /// returns false (its connection is closing, or pauses), the rest of the bytes are kept
    /// too: a later `receive`, of an empty buffer if nothing new came, hands on their frames.
    /// Frames' bodies are views of `incoming`: `handle` copies what it wants to keep.
    public mutating func receive(
        _ incoming: ByteBuffer, maxBodySize: Int, _ handle: (Frame) throws -> Bool
    ) throws {
        var buffer: ByteBuffer
        let ownsStorage: Bool
        if var held = unfinished.take() {
            held.writeImmutableBuffer(incoming)
            (buffer, ownsStorage) = (held, true)
        } else {
            (buffer, ownsStorage) = (incoming, false)
        }
        while let frame = try buffer.readFrame(maxBodySize: maxBodySize) {
            guard try handle(frame) else { break }
        }
        guard buffer.readableBytes > 0 else { return }
        if ownsStorage {
            buffer.discardReadBytes()
            unfinished = buffer
        } else {
            hold(buffer)
        }
    }

    /// Keeps `incoming` after any bytes held, without looking at its frames (a paused
    /// connection's reads).
    public mutating func hold(_ incoming: ByteBuffer) {
        if var held = unfinished.take() {
            held.writeImmutableBuffer(incoming)
            unfinished = held
        } else {
            var held = ByteBufferAllocator().buffer(capacity: max(incoming.readableBytes, 1024))
            held.writeImmutableBuffer(incoming)
            unfinished = held
        }
    }

    /// Bytes held of a frame not yet whole.
    public var heldBytes: Int { unfinished?.readableBytes ?? 0 }
}

/// Splits byte streams into frames for a SwiftNIO pipeline; usable without any channel.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = Frame

    public let maxBodySize: Int

    public init(maxBodySize: Int = Frame.defaultMaxBodySize) {
        self.maxBodySize = maxBodySize
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> Frame? {
        try buffer.readFrame(maxBodySize: maxBodySize)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Frame? {
        if let frame = try decode(buffer: &buffer) { return frame }
        if seenEOF, buffer.readableBytes > 0 {
            throw FrameError(.truncated, "the connection ended inside a frame (\(buffer.readableBytes) bytes left)")
        }
        return nil
    }
}

/// Writes frames for a SwiftNIO pipeline.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Frame

    public init() {}

    public func encode(data: Frame, out: inout ByteBuffer) throws {
        out.writeFrame(data)
    }
}
