import Crypto
import Glibc
import NIOCore

/// The secret both sides prove they know (Python's `authkey`). Never sent.
public struct AuthKey: Sendable {
    let key: SymmetricKey

    /// An authkey of at least 16 bytes (32 random bytes are recommended).
    public init(_ bytes: some Collection<UInt8>) throws {
        guard bytes.count >= 16 else {
            throw HandshakeFailure(.badConfiguration, "an authkey needs at least 16 bytes, got \(bytes.count); generate 32 random bytes")
        }
        key = SymmetricKey(data: Array(bytes))
    }

    /// Reads an authkey file: hexadecimal digits (at least 32, whitespace ignored) as written
    /// by `colony manager`, or else the file's raw bytes.
    public static func bytes(fromFile path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw HandshakeFailure(.badConfiguration, "cannot read the authkey file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &chunk, chunk.count)
            if count <= 0 { break }
            data.append(contentsOf: chunk[..<count])
            guard data.count <= 1 << 20 else {
                throw HandshakeFailure(.badConfiguration, "the authkey file \(path) is larger than 1 MiB; it should hold 64 hex digits")
            }
        }
        let digits = data.filter { !($0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09) }
        let isHex = digits.count >= 32 && digits.count % 2 == 0
            && digits.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || (0x41...0x46).contains($0) }
        guard isHex else { return data }
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0...$0 + 1], as: UTF8.self), radix: 16)! }
    }

    /// Bytes as lowercase hexadecimal digits, the authkey file format.
    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// 32 fresh random bytes.
    public static func random() -> (key: AuthKey, bytes: [UInt8]) {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return (try! AuthKey(bytes), bytes)  // 32 bytes always satisfy the length rule
    }
}

/// Why a handshake ended without a session.
public struct HandshakeFailure: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        /// The peer's proof was wrong: the two sides hold different authkeys.
        public static let authenticationFailed = Code("authenticationFailed")
        /// No protocol version both sides support.
        public static let versionMismatch = Code("versionMismatch")
        /// A handshake message was missing, out of order or malformed.
        public static let protocolViolation = Code("protocolViolation")
        /// The handshake did not finish before its deadline.
        public static let timedOut = Code("timedOut")
        /// The peer sent an error frame; `message` holds what it said.
        public static let rejectedByPeer = Code("rejectedByPeer")
        /// The local configuration cannot work (a short authkey, no versions).
        public static let badConfiguration = Code("badConfiguration")
        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// What both sides agreed on.
public struct NegotiatedSession: Hashable, Sendable {
    public var version: Int
    public var features: [String]
    /// The server's id for this session (shown by `colony status`).
    public var sessionID: UInt64
    /// The largest frame body the server accepts.
    public var maxFrameBody: Int
    /// How many requests the server lets this session have in flight.
    public var maxInFlight: Int
    /// "client" or "worker".
    public var role: String
    /// The peer's software, for logs.
    public var peerAgent: String
    /// The manager's instance: 16 random bytes drawn at each start (empty if the manager
    /// sent none). A different instance than before means the manager restarted and what
    /// only the earlier one held is gone.
    public var instance: [UInt8] = []
}

/// Settings shared by both sides of the handshake.
public struct HandshakeConfiguration: Sendable {
    public var authKey: AuthKey
    /// Protocol versions this side speaks; the highest common one is chosen.
    public var versions: [Int]
    /// Optional features this side supports; the intersection is enabled.
    public var features: [String]
    /// How long the whole handshake may take.
    public var timeoutNanoseconds: UInt64
    /// How long a server waits before telling a client its proof was wrong (slows guessing).
    public var failureDelayNanoseconds: UInt64
    /// This side's software, sent for logs.
    public var agent: String
    /// Where the 32-byte challenges come from; tests inject fixed ones.
    public var makeNonce: @Sendable () -> [UInt8]
    /// A server's instance identity, sent in its welcome (SPEC 4.2).
    public var instance: [UInt8] = []

    public init(
        authKey: AuthKey, versions: [Int] = [1], features: [String] = [], timeoutNanoseconds: UInt64 = 5_000_000_000,
        failureDelayNanoseconds: UInt64 = 500_000_000, agent: String = "colony",
        makeNonce: @escaping @Sendable () -> [UInt8] = HandshakeConfiguration.randomNonce
    ) {
        self.authKey = authKey
        self.versions = versions
        self.features = features
        self.timeoutNanoseconds = timeoutNanoseconds
        self.failureDelayNanoseconds = failureDelayNanoseconds
        self.agent = agent
        self.makeNonce = makeNonce
    }

    public static let nonceSize = 32

    @Sendable public static func randomNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<nonceSize).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}

/// What a handshake state machine asks its I/O shell to do next.
public enum HandshakeStep: Sendable {
    /// Send these frames and keep waiting.
    case send([Frame])
    /// The handshake succeeded: send these frames (possibly none), then the session is open.
    case established(NegotiatedSession, send: [Frame])
    /// The handshake failed: wait `delayNanoseconds`, send these frames, close the connection.
    case failed(HandshakeFailure, send: [Frame], delayNanoseconds: UInt64)
}

/// The proofs (SPEC.md, "Handshake"): HMAC-SHA256 under the authkey over a direction
/// label and the transcript hash, which covers both hello messages and so both nonces and
/// everything negotiated.
enum HandshakeProof {
    static let clientLabel = Array("colony/1 client proof".utf8)
    static let serverLabel = Array("colony/1 server proof".utf8)
    static let transcriptLabel = Array("colony/1 transcript".utf8)

    static func transcript(hello: ByteBuffer, challenge: ByteBuffer) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: transcriptLabel)
        for part in [hello, challenge] {
            var length = UInt32(part.readableBytes).bigEndian
            withUnsafeBytes(of: &length) { hasher.update(bufferPointer: $0) }
            part.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
        }
        return Array(hasher.finalize())
    }

    static func proof(_ label: [UInt8], transcript: [UInt8], key: AuthKey) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: label + transcript, using: key.key))
    }

    /// Constant-time check of a peer's proof.
    static func verify(_ proof: [UInt8], _ label: [UInt8], transcript: [UInt8], key: AuthKey) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: label + transcript, using: key.key)
    }
}

/// The client side of the handshake as a pure state machine: frames and time in, steps out.
public struct ClientHandshake: Sendable {
    private enum State {
        case idle
        case sentHello(hello: ByteBuffer, nonce: [UInt8])
        case sentProof(transcript: [UInt8], version: Int, features: [String])
        case done
    }

    private let configuration: HandshakeConfiguration
    private let role: String
    private var state = State.idle
    private var deadline: UInt64 = 0

    /// `role` is "client" for programs using objects, "worker" for pool worker nodes.
    public init(configuration: HandshakeConfiguration, role: String = "client") {
        self.configuration = configuration
        self.role = role
    }

    /// Begins: returns the hello frame to send. `now` is monotonic nanoseconds.
    public mutating func start(now: UInt64) -> Frame {
        precondition(isIdle, "start() begins a handshake once")
        let nonce = configuration.makeNonce()
        let hello: WireValue = [
            "protocol": "colony",
            "versions": .array(configuration.versions.map { .integer($0) }),
            "features": .array(configuration.features.map(WireValue.string)),
            "nonce": .bytes(nonce),
            "role": .string(role),
            "agent": .string(configuration.agent),
        ]
        let body = hello.encoded()
        state = .sentHello(hello: body, nonce: nonce)
        deadline = now &+ configuration.timeoutNanoseconds
        return Frame(kind: .hello, body: body)
    }

    private var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    /// Feeds one frame from the server.
    public mutating func receive(_ frame: Frame, now: UInt64) -> HandshakeStep {
        if let expired = checkDeadline(now: now) { return expired }
        if frame.flags.contains(.more) { return fail(.init(.protocolViolation, "the server sent a chunked \(frame.kind) frame during the handshake")) }
        switch (state, frame.kind) {
        case (_, .error):
            return fail(rejection(frame))
        case (.sentHello(let hello, _), .challenge):
            guard let challenge = try? frame.value(), let version = challenge["version"]?.int64Value,
                let nonce = challenge["nonce"]?.bytesValue, nonce.count == HandshakeConfiguration.nonceSize,
                let features = challenge["features"]?.arrayValue?.compactMap(\.stringValue)
            else {
                return fail(.init(.protocolViolation, "the server's challenge is malformed"))
            }
            guard configuration.versions.contains(Int(version)) else {
                return fail(.init(.versionMismatch, "the server chose protocol version \(version), which this client does not speak"))
            }
            guard Set(features).isSubset(of: configuration.features) else {
                return fail(.init(.protocolViolation, "the server enabled features this client did not offer"))
            }
            let transcript = HandshakeProof.transcript(hello: hello, challenge: frame.body)
            let proof = HandshakeProof.proof(HandshakeProof.clientLabel, transcript: transcript, key: configuration.authKey)
            state = .sentProof(transcript: transcript, version: Int(version), features: features)
            return .send([Frame(kind: .proof, value: ["proof": .bytes(proof)])])
        case (.sentProof(let transcript, let version, let features), .welcome):
            guard let welcome = try? frame.value(), let proof = welcome["proof"]?.bytesValue,
                let session = welcome["session"]?.uint64Value, let maxFrame = welcome["max_frame"]?.int64Value,
                let maxInFlight = welcome["max_in_flight"]?.int64Value
            else {
                return fail(.init(.protocolViolation, "the server's welcome is malformed"))
            }
            guard HandshakeProof.verify(proof, HandshakeProof.serverLabel, transcript: transcript, key: configuration.authKey)
            else {
                return fail(.init(.authenticationFailed, "the server could not prove it holds the authkey; it may be an impostor or use another key"))
            }
            state = .done
            return .established(
                NegotiatedSession(
                    version: version, features: features, sessionID: session, maxFrameBody: Int(maxFrame),
                    maxInFlight: Int(maxInFlight), role: role, peerAgent: welcome["agent"]?.stringValue ?? "unknown",
                    instance: welcome["instance"]?.bytesValue ?? []),
                send: [])
        default:
            return fail(.init(.protocolViolation, "unexpected \(frame.kind) frame during the handshake"))
        }
    }

    /// Call when time passes without frames; fails once the deadline is past.
    public mutating func checkDeadline(now: UInt64) -> HandshakeStep? {
        guard deadline != 0, now > deadline, !isDone else { return nil }
        return fail(.init(.timedOut, "the server did not complete the handshake in time"))
    }

    private var isDone: Bool {
        if case .done = state { return true }
        return false
    }

    private mutating func fail(_ failure: HandshakeFailure) -> HandshakeStep {
        state = .done
        return .failed(failure, send: [], delayNanoseconds: 0)
    }

    private func rejection(_ frame: Frame) -> HandshakeFailure {
        guard let error = try? RemoteError(wireValue: frame.value()) else {
            return HandshakeFailure(.rejectedByPeer, "the server rejected the handshake")
        }
        switch error.code {
        case .authFailed: return HandshakeFailure(.authenticationFailed, "the server rejected our authkey: \(error.message)")
        case .versionMismatch: return HandshakeFailure(.versionMismatch, error.message)
        default: return HandshakeFailure(.rejectedByPeer, "\(error.code): \(error.message)")
        }
    }
}

/// The server side of the handshake as a pure state machine.
public struct ServerHandshake: Sendable {
    private enum State {
        case awaitingHello
        case sentChallenge(transcript: [UInt8], version: Int, features: [String], role: String, agent: String)
        case done
    }

    private let configuration: HandshakeConfiguration
    private let sessionID: UInt64
    private let maxFrameBody: Int
    private let maxInFlight: Int
    private var state = State.awaitingHello
    private let deadline: UInt64

    public init(
        configuration: HandshakeConfiguration, sessionID: UInt64, maxFrameBody: Int = Frame.defaultMaxBodySize,
        maxInFlight: Int = 4096, now: UInt64
    ) {
        self.configuration = configuration
        self.sessionID = sessionID
        self.maxFrameBody = maxFrameBody
        self.maxInFlight = maxInFlight
        self.deadline = now &+ configuration.timeoutNanoseconds
    }

    /// Feeds one frame from the client.
    public mutating func receive(_ frame: Frame, now: UInt64) -> HandshakeStep {
        if let expired = checkDeadline(now: now) { return expired }
        if frame.flags.contains(.more) { return violation("handshake messages are single frames; a \(frame.kind) frame came chunked") }
        switch (state, frame.kind) {
        case (.awaitingHello, .hello):
            return answerHello(frame)
        case (.sentChallenge(let transcript, let version, let features, let role, let agent), .proof):
            guard let proof = (try? frame.value())?["proof"]?.bytesValue,
                HandshakeProof.verify(proof, HandshakeProof.clientLabel, transcript: transcript, key: configuration.authKey)
            else {
                // The same answer, after the same delay, whatever was wrong with the proof.
                state = .done
                return .failed(
                    HandshakeFailure(.authenticationFailed, "the client's proof did not verify"),
                    send: [RemoteError(.authFailed, "authentication failed").frame(requestID: 0)],
                    delayNanoseconds: configuration.failureDelayNanoseconds)
            }
            state = .done
            let serverProof = HandshakeProof.proof(HandshakeProof.serverLabel, transcript: transcript, key: configuration.authKey)
            var fields: [(String, WireValue)] = [
                ("proof", .bytes(serverProof)), ("session", .integer(sessionID)), ("max_frame", .integer(maxFrameBody)),
                ("max_in_flight", .integer(maxInFlight)), ("agent", .string(configuration.agent)),
            ]
            if !configuration.instance.isEmpty { fields.append(("instance", .bytes(configuration.instance))) }
            let welcome = WireValue.map(fields.map { WirePair(.string($0.0), $0.1) })
            return .established(
                NegotiatedSession(
                    version: version, features: features, sessionID: sessionID, maxFrameBody: maxFrameBody,
                    maxInFlight: maxInFlight, role: role, peerAgent: agent),
                send: [Frame(kind: .welcome, value: welcome)])
        default:
            return violation("unexpected \(frame.kind) frame during the handshake")
        }
    }

    /// Call when time passes without frames; fails once the deadline is past.
    public mutating func checkDeadline(now: UInt64) -> HandshakeStep? {
        if case .done = state { return nil }
        guard now > deadline else { return nil }
        state = .done
        return .failed(
            HandshakeFailure(.timedOut, "the client did not complete the handshake in time"),
            send: [RemoteError(.authFailed, "handshake timed out").frame(requestID: 0)], delayNanoseconds: 0)
    }

    private mutating func answerHello(_ frame: Frame) -> HandshakeStep {
        guard let hello = try? frame.value(), hello["protocol"] == "colony",
            let versions = hello["versions"]?.arrayValue?.compactMap(\.int64Value),
            let nonce = hello["nonce"]?.bytesValue, nonce.count == HandshakeConfiguration.nonceSize,
            let offered = hello["features"]?.arrayValue?.compactMap(\.stringValue)
        else {
            return violation("the hello is malformed or not Colony's")
        }
        let role = hello["role"]?.stringValue ?? "client"
        guard role == "client" || role == "worker" else {
            return violation("unknown role '\(role)'")
        }
        guard let version = configuration.versions.filter({ versions.contains(Int64($0)) }).max() else {
            state = .done
            let supported = configuration.versions.map(String.init).joined(separator: ", ")
            return .failed(
                HandshakeFailure(.versionMismatch, "the client speaks versions \(versions); this server speaks \(supported)"),
                send: [
                    RemoteError(
                        .versionMismatch, "no common protocol version; this server speaks \(supported)",
                        detail: .array(configuration.versions.map { .integer($0) })
                    ).frame(requestID: 0)
                ],
                delayNanoseconds: 0)
        }
        let features = configuration.features.filter(offered.contains)
        let challenge: WireValue = [
            "version": .integer(version),
            "features": .array(features.map(WireValue.string)),
            "nonce": .bytes(configuration.makeNonce()),
        ]
        let challengeBody = challenge.encoded()
        state = .sentChallenge(
            transcript: HandshakeProof.transcript(hello: frame.body, challenge: challengeBody), version: version,
            features: features, role: role, agent: hello["agent"]?.stringValue ?? "unknown")
        return .send([Frame(kind: .challenge, body: challengeBody)])
    }

    private mutating func violation(_ message: String) -> HandshakeStep {
        state = .done
        return .failed(
            HandshakeFailure(.protocolViolation, message),
            send: [RemoteError(.badRequest, "handshake: \(message)").frame(requestID: 0)],
            delayNanoseconds: configuration.failureDelayNanoseconds)
    }
}
