import ColonyWire
import NIOCore

/// A worker node's connection to a manager (hello role "worker", SPEC.md 8): what the
/// worker runtime sends its reports over. Frames the manager sends unasked (assignments,
/// cancels, drain, errors about the worker's reports) go to `onMessage`, on the
/// connection's event loop: hand them off, do not block there.
public final class WorkerLink: @unchecked Sendable {
    private let connection: ManagerConnection

    private init(connection: ManagerConnection) { self.connection = connection }

    /// Connects and runs the handshake; the same options as `Manager.connect`. With
    /// `unixSocketPath`, over the manager's Unix domain socket, without TLS.
    public static func connect(
        host: String = "127.0.0.1", port: Int, authKey: [UInt8]? = nil, trust: ManagerTrust, clientCertificate: ClientCertificate? = nil,
        serverName: String = "localhost", timeoutSeconds: Double = 10, eventLoopGroup: any EventLoopGroup = Manager.defaultEventLoopGroup,
        busyPoll: Duration = .microseconds(200), unixSocketPath: String? = nil, onMessage: @escaping @Sendable (Message) -> Void
    ) async throws -> WorkerLink {
        let (key, tls) = try Manager.credentials(
            authKey: authKey, trust: unixSocketPath == nil ? trust : .insecurePlaintext, clientCertificate: clientCertificate)
        let address = ManagerAddress(
            host: host, port: port, authKey: key, trust: trust, clientCertificate: clientCertificate, serverName: serverName,
            timeoutSeconds: timeoutSeconds, busyPoll: busyPoll)
        let connection = try await ManagerConnection.open(
            host: host, port: port, authKey: key, tls: tls, serverName: serverName, group: eventLoopGroup, timeoutSeconds: timeoutSeconds,
            busyPollNanoseconds: address.busyPollNanoseconds, role: "worker", poolFrames: onMessage, unixSocketPath: unixSocketPath)
        return WorkerLink(connection: connection)
    }

    /// Sends one pool message (worker-hello, task-result, task-failure, heartbeat, drain).
    public func send(_ message: some PoolMessage, requestID: UInt64 = 0) {
        connection.sendMessage(kind: type(of: message).kind, requestID: requestID, value: message.wireValue)
    }

    /// Sends messages whose bodies are already encoded MessagePack (as a worker process
    /// wrote them), without decoding them here, in one write.
    public func send(encoded messages: [Message]) {
        connection.sendEncoded(messages)
    }

    public var isConnected: Bool { connection.isOpen }

    /// Returns when the connection has closed, for whatever reason.
    public func closed() async {
        _ = try? await connection.channel.closeFuture.get()
    }

    /// Says goodbye and closes.
    public func close() async { await connection.close() }
}
