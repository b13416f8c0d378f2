import ColonyWire
import Foundation
import NIOCore
import Testing

@Suite struct HandshakeTests {
    let key = Array(0..<32 as Range<UInt8>)
    let clientNonce = [UInt8](repeating: 0xC1, count: 32)
    let serverNonce = [UInt8](repeating: 0x5E, count: 32)

    func configuration(key: [UInt8], nonce: [UInt8], versions: [Int] = [1], features: [String] = []) throws -> HandshakeConfiguration {
        HandshakeConfiguration(
            authKey: try AuthKey(key), versions: versions, features: features, agent: "colony-test",
            makeNonce: { nonce })
    }

    func encoded(_ frame: Frame) -> String {
        var buffer = ByteBuffer()
        buffer.writeFrame(frame)
        return hex(buffer)
    }

    func frames(_ step: HandshakeStep) -> [Frame] {
        switch step {
        case .send(let frames): frames
        case .established(_, let frames): frames
        case .failed(_, let frames, _): frames
        }
    }

    /// Runs both machines against each other; returns every frame sent, by kind.
    func run(clientKey: [UInt8], serverKey: [UInt8], clientVersions: [Int] = [1], serverVersions: [Int] = [1])
        throws -> (client: HandshakeStep, server: HandshakeStep, sent: [String: Frame])
    {
        var client = ClientHandshake(configuration: try configuration(key: clientKey, nonce: clientNonce, versions: clientVersions))
        var server = ServerHandshake(
            configuration: try configuration(key: serverKey, nonce: serverNonce, versions: serverVersions), sessionID: 7, now: 0)
        var sent: [String: Frame] = [:]
        let hello = client.start(now: 0)
        sent["hello"] = hello
        var serverStep = server.receive(hello, now: 1)
        var clientStep = HandshakeStep.send([])
        while case .send(let toClient) = serverStep, let challenge = toClient.first {
            sent["\(challenge.kind)"] = challenge
            clientStep = client.receive(challenge, now: 2)
            guard case .send(let toServer) = clientStep, let proof = toServer.first else { break }
            sent["\(proof.kind)"] = proof
            serverStep = server.receive(proof, now: 3)
        }
        for frame in frames(serverStep) { sent["\(frame.kind)"] = frame }
        if case .established(_, let toClient) = serverStep, let welcome = toClient.first {
            clientStep = client.receive(welcome, now: 4)
        } else if case .failed(_, let toClient, _) = serverStep, let error = toClient.first {
            clientStep = client.receive(error, now: 4)
        }
        return (clientStep, serverStep, sent)
    }

    @Test func successfulHandshakeMatchesTheVector() throws {
        let vectors = try loadJSON("Protocol/vectors/handshake.json") as! [[String: Any]]
        let vector = vectors.first { $0["name"] as! String == "success" }!
        let expected = vector["frames"] as! [String: String]
        let (client, server, sent) = try run(clientKey: key, serverKey: key)
        for name in ["hello", "challenge", "proof", "welcome"] {
            #expect(sent[name].map(encoded) == expected[name], "\(name) frame")
        }
        guard case .established(let clientSession, _) = client, case .established(let serverSession, _) = server else {
            Issue.record("handshake did not succeed: \(client) / \(server)")
            return
        }
        #expect(clientSession.sessionID == 7 && serverSession.sessionID == 7)
        #expect(clientSession.version == 1 && serverSession.version == 1)
        #expect(clientSession.maxFrameBody == Frame.defaultMaxBodySize)
        #expect(serverSession.peerAgent == "colony-test" && clientSession.peerAgent == "colony-test")
    }

    @Test func wrongKeyFailsAsTheVectorSaysAfterADelay() throws {
        let vectors = try loadJSON("Protocol/vectors/handshake.json") as! [[String: Any]]
        let vector = vectors.first { $0["name"] as! String == "wrong-key" }!
        let expected = vector["frames"] as! [String: String]
        let (client, server, sent) = try run(clientKey: key, serverKey: Array(1...32))
        for name in ["hello", "challenge", "proof", "error"] {
            #expect(sent[name].map(encoded) == expected[name], "\(name) frame")
        }
        #expect(sent["welcome"] == nil)  // no proof from the server for an unproven client
        guard case .failed(let serverFailure, _, let delay) = server, case .failed(let clientFailure, _, _) = client else {
            Issue.record("a wrong key was accepted")
            return
        }
        #expect(serverFailure.code == .authenticationFailed)
        #expect(clientFailure.code == .authenticationFailed)
        #expect(delay > 0)
    }

    @Test func noCommonVersionIsRejectedWithTheServersVersions() throws {
        let (client, server, _) = try run(clientKey: key, serverKey: key, clientVersions: [2], serverVersions: [1])
        guard case .failed(let failure, let frames, _) = server else {
            Issue.record("expected a version mismatch")
            return
        }
        #expect(failure.code == .versionMismatch)
        let error = try RemoteError(wireValue: frames[0].value())
        #expect(error.code == .versionMismatch)
        #expect(error.detail == [1])
        if case .failed(let clientFailure, _, _) = client {
            #expect(clientFailure.code == .versionMismatch)
        } else {
            Issue.record("the client did not fail")
        }
    }

    @Test func highestCommonVersionAndFeatureIntersectionAreChosen() throws {
        var client = ClientHandshake(configuration: try configuration(key: key, nonce: clientNonce, versions: [1, 2, 3], features: ["a", "b"]))
        var server = ServerHandshake(
            configuration: try configuration(key: key, nonce: serverNonce, versions: [1, 2], features: ["b", "c"]), sessionID: 1, now: 0)
        guard case .send(let challenge) = server.receive(client.start(now: 0), now: 0) else {
            Issue.record("no challenge")
            return
        }
        #expect(try challenge[0].value()["version"] == 2)
        #expect(try challenge[0].value()["features"] == ["b"])
        guard case .send(let proof) = client.receive(challenge[0], now: 0),
            case .established(let session, _) = server.receive(proof[0], now: 0)
        else {
            Issue.record("handshake failed")
            return
        }
        #expect(session.version == 2 && session.features == ["b"])
    }

    @Test func aServerProofCannotBeReflectedAsAClientProof() throws {
        // An attacker without the key replays the server's welcome proof as its own proof:
        // the direction labels differ, so it must fail.
        let (_, _, sent) = try run(clientKey: key, serverKey: key)
        let serverProof = try sent["welcome"]!.value()["proof"]!
        var server = ServerHandshake(configuration: try configuration(key: key, nonce: serverNonce), sessionID: 7, now: 0)
        _ = server.receive(sent["hello"]!, now: 0)
        let forged = Frame(kind: .proof, value: ["proof": serverProof])
        guard case .failed(let failure, _, _) = server.receive(forged, now: 0) else {
            Issue.record("a reflected proof was accepted")
            return
        }
        #expect(failure.code == .authenticationFailed)
    }

    @Test func aRecordedProofDoesNotWorkWithAFreshChallenge() throws {
        let (_, _, sent) = try run(clientKey: key, serverKey: key)
        var server = ServerHandshake(configuration: try configuration(key: key, nonce: Array(repeating: 0x77, count: 32)), sessionID: 8, now: 0)
        _ = server.receive(sent["hello"]!, now: 0)
        guard case .failed(let failure, _, _) = server.receive(sent["proof"]!, now: 0) else {
            Issue.record("a replayed proof was accepted")
            return
        }
        #expect(failure.code == .authenticationFailed)
    }

    @Test func deadlinesAndOutOfOrderFrames() throws {
        var server = ServerHandshake(configuration: try configuration(key: key, nonce: serverNonce), sessionID: 1, now: 0)
        #expect(server.checkDeadline(now: 1_000) == nil)
        guard case .failed(let failure, _, _)? = server.checkDeadline(now: 6_000_000_000) else {
            Issue.record("the deadline did not fire")
            return
        }
        #expect(failure.code == .timedOut)

        var early = ServerHandshake(configuration: try configuration(key: key, nonce: serverNonce), sessionID: 1, now: 0)
        guard case .failed(let violation, _, _) = early.receive(Frame(kind: .proof, value: ["proof": .bytes([1])]), now: 0) else {
            Issue.record("a proof before hello was accepted")
            return
        }
        #expect(violation.code == .protocolViolation)

        var client = ClientHandshake(configuration: try configuration(key: key, nonce: clientNonce))
        _ = client.start(now: 0)
        guard case .failed(let clientFailure, _, _) = client.receive(Frame(kind: .welcome, value: [:]), now: 1) else {
            Issue.record("a welcome before the challenge was accepted")
            return
        }
        #expect(clientFailure.code == .protocolViolation)
        var slow = ClientHandshake(configuration: try configuration(key: key, nonce: clientNonce))
        _ = slow.start(now: 0)
        #expect(slow.checkDeadline(now: 1) == nil)
        if case .failed(let timeout, _, _)? = slow.checkDeadline(now: 10_000_000_000) {
            #expect(timeout.code == .timedOut)
        } else {
            Issue.record("the client deadline did not fire")
        }
    }

    @Test func malformedHellosAreRejected() throws {
        let malformed: [WireValue] = [
            [:], ["protocol": "other", "versions": [1], "features": [], "nonce": .bytes(clientNonce)],
            ["protocol": "colony", "versions": [1], "features": [], "nonce": .bytes([1, 2, 3])],
            ["protocol": "colony", "versions": "1", "features": [], "nonce": .bytes(clientNonce)],
            ["protocol": "colony", "versions": [1], "features": [], "nonce": .bytes(clientNonce), "role": "admin"],
        ]
        for hello in malformed {
            var server = ServerHandshake(configuration: try configuration(key: key, nonce: serverNonce), sessionID: 1, now: 0)
            guard case .failed(let failure, let frames, _) = server.receive(Frame(kind: .hello, value: hello), now: 0) else {
                Issue.record("accepted \(hello)")
                continue
            }
            #expect(failure.code == .protocolViolation)
            #expect(try RemoteError(wireValue: frames[0].value()).code == .badRequest)
        }
        var garbage = ServerHandshake(configuration: try configuration(key: key, nonce: serverNonce), sessionID: 1, now: 0)
        guard case .failed = garbage.receive(Frame(kind: .hello, body: ByteBuffer(bytes: [0xc1, 0xff])), now: 0) else {
            Issue.record("garbage accepted")
            return
        }
    }

    @Test func handshakeMessagesAreSingleFramesAndTheFailureCodesAreFixed() throws {
        // A whole, valid hello with MORE set is refused: handshake messages are never chunked.
        var client = ClientHandshake(configuration: try configuration(key: key, nonce: clientNonce))
        var hello = client.start(now: 0)
        hello.flags.insert(.more)
        var server = ServerHandshake(configuration: try configuration(key: key, nonce: serverNonce), sessionID: 1, now: 0)
        guard case .failed(let failure, let frames, _) = server.receive(hello, now: 0) else {
            Issue.record("a chunked hello was accepted")
            return
        }
        #expect(failure.code == .protocolViolation)
        #expect(try RemoteError(wireValue: frames[0].value()).code == .badRequest)

        // A proof that is no proof at all, and a handshake that runs out of time, both end
        // with AuthFailed, as a wrong proof does.
        var malformed = ServerHandshake(configuration: try configuration(key: key, nonce: serverNonce), sessionID: 1, now: 0)
        _ = malformed.receive(ClientHandshake(configuration: try configuration(key: key, nonce: clientNonce)).startedHello(), now: 0)
        guard case .failed(_, let refusal, _) = malformed.receive(Frame(kind: .proof, value: ["proof": "not bytes"]), now: 1) else {
            Issue.record("a malformed proof was accepted")
            return
        }
        #expect(try RemoteError(wireValue: refusal[0].value()).code == .authFailed)
        var slow = ServerHandshake(configuration: try configuration(key: key, nonce: serverNonce), sessionID: 1, now: 0)
        guard case .failed(_, let expiry, _)? = slow.checkDeadline(now: 6_000_000_000) else {
            Issue.record("the deadline did not fire")
            return
        }
        #expect(try RemoteError(wireValue: expiry[0].value()).code == .authFailed)
    }

    @Test func shortAuthKeysAreRefused() {
        #expect(throws: HandshakeFailure.self) { try AuthKey([1, 2, 3]) }
        #expect(AuthKey.random().bytes.count == 32)
    }
}

extension ClientHandshake {
    /// A fresh client's hello frame.
    func startedHello() -> Frame {
        var copy = self
        return copy.start(now: 0)
    }
}
