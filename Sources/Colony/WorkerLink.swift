import ColonyWire
import NIOCore

/// A worker node's connection to a manager (hello role "worker", SPEC.md 8): what the
/// worker runtime sends its reports over. Frames the manager sends unasked (assignments,
/// cancels, drain, errors about the worker's reports) go to `onMessage`, on the
/// connection's event loop: hand them off, do not block there.
public final class WorkerLink: @unchecked Sendable {
    private let connection: ManagerConnection

    private init(connection: ManagerConnection) { self.connection = connection }

    /// Connects and runs the handshake; the same options as `Manager.connect`.
    public static func connect(
        host: String = "127.0.0.1", port: Int, authKey: [UInt8]? = nil, trust: ManagerTrust, clientCertificate: ClientCertificate? = nil,
        serverName: String = "localhost", timeoutSeconds: Double = 10, eventLoopGroup: any EventLoopGroup = Manager.defaultEventLoopGroup,
        busyPoll: Duration = .microseconds(200), onMessage: @escaping @Sendable (Message) -> Void
    ) async throws -> WorkerLink {
        let (key, tls) = try Manager.credentials(authKey: authKey, trust: trust, clientCertificate: clientCertificate)
        let address = ManagerAddress(
            host: host, port: port, authKey: key, trust: trust, clientCertificate: clientCertificate, serverName: serverName,
            timeoutSeconds: timeoutSeconds, busyPoll: busyPoll)
        let connection = try await ManagerConnection.open(
            host: host, port: port, authKey: key, tls: tls, serverName: serverName, group: eventLoopGroup, timeoutSeconds: timeoutSeconds,
            busyPollNanoseconds: address.busyPollNanoseconds, role: "worker", poolFrames: onMessage)
        return WorkerLink(connection: connection)
    }

    /// Sends one pool message (worker-hello, task-result, task-failure, heartbeat, drain).
    public func send(_ message: some PoolMessage, requestID: UInt64 = 0) {
        connection.sendMessage(kind: type(of: message).kind, requestID: requestID, value: message.wireValue)
    }

    /// Sends a message whose body is already encoded MessagePack (as a worker process wrote
    /// it), without decoding it here.
    public func send(kind: FrameKind, requestID: UInt64, body: ByteBuffer) {
        connection.sendEncoded(Message(kind: kind, requestID: requestID, body: body))
    }

    public var isConnected: Bool { connection.isOpen }

    /// Returns when the connection has closed, for whatever reason.
    public func closed() async {
        _ = try? await connection.channel.closeFuture.get()
    }

    /// Says goodbye and closes.
    public func close() async { await connection.close() }
}
